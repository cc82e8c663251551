// Reads topics from the beginning with KafkaJS (no codec plugin installed) and parses every
// record with the CloudEvents JS SDK's Kafka binding, as a Node.js team would.
//
//   node read-cloudevents.cjs --brokers 127.0.0.1:9092 --timeout-ms 30000 topicA=12 topicB=3
//
// Each topic argument is `<topic>=<records expected>`; the script reads until every topic gave
// that many records (or the timeout) and prints one JSON document on stdout:
//   {"ok": bool, "error": "..." | null,
//    "topics": {"<topic>": {"records": n, "modes": {"binary": n}, "ids": [...],
//                           "types": [...], "invalid": [{"offset", "partition", "error"}]}}}
// and exits 0 only when every expected record arrived and each one is a valid CloudEvent.
"use strict";

const { Kafka: KafkaJS, logLevel } = require("kafkajs");
const { Kafka: CloudEventsKafka } = require("cloudevents");

function parseArgs(argv) {
  const options = { brokers: null, timeoutMs: 30000, expected: {} };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--brokers") {
      options.brokers = argv[++i].split(",");
    } else if (arg === "--timeout-ms") {
      options.timeoutMs = Number(argv[++i]);
    } else {
      const at = arg.lastIndexOf("=");
      if (at <= 0) throw new Error(`bad topic argument ${JSON.stringify(arg)}: want <topic>=<count>`);
      options.expected[arg.slice(0, at)] = Number(arg.slice(at + 1));
    }
  }
  if (!options.brokers) throw new Error("--brokers is required");
  return options;
}

function headersAsText(headers) {
  const text = {};
  for (const [name, value] of Object.entries(headers || {})) {
    if (value === undefined || value === null) continue;
    const one = Array.isArray(value) ? value[value.length - 1] : value;
    text[name] = Buffer.isBuffer(one) ? one.toString("utf8") : String(one);
  }
  return text;
}

function modeOf(headers) {
  const contentType = headers["content-type"] || "";
  if (contentType.startsWith("application/cloudevents-batch")) return "batch";
  if (contentType.startsWith("application/cloudevents")) return "structured";
  return headers.ce_id ? "binary" : "none";
}

// Every record of `topic` as a CloudEvent, or the reason it is not one.
function check(report, topic, partition, message) {
  const headers = headersAsText(message.headers);
  const kafkaMessage = {
    key: message.key === null ? "" : message.key.toString("utf8"),
    value: message.value === null ? null : message.value.toString("utf8"),
    headers,
    body: message.value === null ? null : message.value.toString("utf8"),
    timestamp: message.timestamp,
  };
  const entry = report.topics[topic];
  entry.records += 1;
  const mode = modeOf(headers);
  entry.modes[mode] = (entry.modes[mode] || 0) + 1;
  try {
    if (!CloudEventsKafka.isEvent(kafkaMessage)) throw new Error("not a CloudEvent");
    const event = CloudEventsKafka.toEvent(kafkaMessage);
    if (Array.isArray(event)) throw new Error("a batch, not one event");
    event.validate();
    if (event.data === undefined || event.data === null) throw new Error("no data");
    entry.ids.push(event.id);
    if (!entry.types.includes(event.type)) entry.types.push(event.type);
  } catch (error) {
    entry.invalid.push({ partition, offset: message.offset, error: String(error && error.message ? error.message : error) });
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const topics = Object.keys(options.expected);
  const report = { ok: false, error: null, topics: {} };
  for (const topic of topics) {
    report.topics[topic] = { records: 0, modes: {}, ids: [], types: [], invalid: [] };
  }
  const kafka = new KafkaJS({
    clientId: "foreign-kafkajs",
    brokers: options.brokers,
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 },
  });
  const groupId = `foreign-kafkajs-${process.pid}-${Date.now()}`;
  const consumer = kafka.consumer({ groupId, retry: { retries: 0 } });
  const done = () => topics.every((t) => report.topics[t].records >= options.expected[t]);

  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  consumer.on(consumer.events.CRASH, (event) => {
    report.error = String(event.payload.error && event.payload.error.message
      ? event.payload.error.message : event.payload.error);
    finish();
  });
  const timer = setTimeout(() => {
    if (!report.error) report.error = `timed out after ${options.timeoutMs} ms`;
    finish();
  }, options.timeoutMs);

  try {
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        check(report, topic, partition, message);
        if (done()) finish();
      },
    });
    if (done()) finish();
    await finished;
  } catch (error) {
    report.error = String(error && error.message ? error.message : error);
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => {});
  }
  if (done() && report.error && report.error.startsWith("timed out")) report.error = null;
  report.ok = !report.error && done()
    && topics.every((t) => report.topics[t].invalid.length === 0);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(report.ok ? 0 : 1);
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(error), topics: {} })}\n`);
  process.exit(1);
});
