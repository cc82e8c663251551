// Reads example records through the runtime checks quicktype generates (Convert.to<Type>).
// Usage: node read-examples.cjs <compiled contracts.js> <examples.json>
// examples.json: [{"id": "...", "method": "toTask", "json": "<the record's JSON text>"}, ...]
// Prints {"<id>": null | "<error>"} as JSON; exits 0 when it could run them all.
"use strict";
const fs = require("fs");
const path = require("path");

const [compiled, examplesFile] = process.argv.slice(2);
const { Convert } = require(path.resolve(compiled));
const examples = JSON.parse(fs.readFileSync(examplesFile, "utf8"));
const report = {};
for (const { id, method, json } of examples) {
  if (typeof Convert[method] !== "function") {
    report[id] = `no Convert.${method}`;
    continue;
  }
  try {
    Convert[method](json);
    report[id] = null;
  } catch (error) {
    report[id] = String(error && error.message ? error.message : error);
  }
}
process.stdout.write(JSON.stringify(report));
