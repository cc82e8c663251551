// Parses and validates an AsyncAPI document with @asyncapi/parser (the parser, schema checks and
// Spectral rule set that `asyncapi validate` runs). Prints one JSON document:
// {"errors": [...], "warnings": [...]} and exits 1 when there are errors.
const fs = require("fs");
const path = require("path");
const { Parser, fromFile } = require("@asyncapi/parser");

async function main() {
  const file = path.resolve(process.argv[2]);
  const parser = new Parser();
  const { diagnostics } = await fromFile(parser, file).parse();
  const describe = (d) => ({ code: d.code, message: d.message, path: d.path.join("/") });
  const errors = diagnostics.filter((d) => d.severity === 0).map(describe);
  const warnings = diagnostics.filter((d) => d.severity === 1).map(describe);
  process.stdout.write(JSON.stringify({ errors, warnings }, null, 2) + "\n");
  process.exit(errors.length ? 1 : 0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(2);
});
