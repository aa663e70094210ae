// A Graphile Worker that runs no-op jobs as they arrive, for
// peer_latency.py: it applies Graphile Worker's migrations to the database
// it is given, runs its worker (LISTEN wake-ups, as the others) until its
// standard input closes, then prints one JSON object with each job's pickup
// latency.
//
// Graphile Worker deletes a job when it succeeds, so the latency is taken
// while the job runs, from its own row as the claim returned it: locked_at
// (set by the claim) minus created_at, both the server's clock, as dawdle's
// started_at - created_at. JavaScript dates keep milliseconds only, so this
// worker's pool parses timestamps itself to keep their microseconds.
//
// Usage: node graphile_latency.mjs --database-url URL --concurrency C [--batched]
// (NODE_PATH must reach graphile-worker and pg.)

import { createRequire } from "node:module";
import { parseArgs } from "node:util";

import { workerOptions, workerPool } from "./graphile_common.mjs";

const require = createRequire(import.meta.url);
const { Logger, run, runMigrations } = require("graphile-worker");
const pg = require("pg");

const TIMESTAMPTZ = 1184;

const { values } = parseArgs({
  options: {
    "database-url": { type: "string" },
    concurrency: { type: "string" },
    batched: { type: "boolean", default: false },
  },
});
const connectionString = values["database-url"];
const concurrency = Number(values.concurrency);
if (!connectionString || !(concurrency >= 1)) {
  console.error("usage: graphile_latency.mjs --database-url URL --concurrency C [--batched]");
  process.exit(2);
}

// A timestamp as pg parses it (a Date, which Graphile Worker expects), with
// its microseconds since the epoch beside it.
const parseDate = pg.types.getTypeParser(TIMESTAMPTZ);
function parseTimestamp(text) {
  const date = parseDate(text);
  const fraction = /\d\d:\d\d:\d\d\.(\d{1,6})/.exec(text);
  const micros = fraction ? Number(fraction[1].padEnd(6, "0")) : 0;
  date.micros = Math.floor(date.getTime() / 1000) * 1_000_000 + micros;
  return date;
}
const types = {
  getTypeParser: (oid, format) =>
    oid === TIMESTAMPTZ && format !== "binary" ? parseTimestamp : pg.types.getTypeParser(oid, format),
};

const quiet = new Logger(() => () => {});
// Pairs of [created_at in seconds since the epoch, latency in ms].
const latencies = [];
function noop(_payload, helpers) {
  const { created_at: created, locked_at: locked } = helpers.job;
  if (created?.micros !== undefined && locked?.micros !== undefined) {
    latencies.push([created.micros / 1e6, (locked.micros - created.micros) / 1000]);
  }
}

await runMigrations({ connectionString, logger: quiet });

const worker = workerOptions(concurrency, values.batched);
const pool = workerPool("graphile_latency", { connectionString, max: worker.maxPoolSize, types });

const runner = await run({
  pgPool: pool,
  concurrency,
  noHandleSignals: true,
  logger: quiet,
  taskList: { noop },
  preset: { worker },
});

// The harness closes our standard input to stop us.
process.stdin.resume();
await new Promise((resolve) => process.stdin.on("end", resolve).on("close", resolve));
await runner.stop();
await pool.end();
const missing = latencies.length === 0 ? "no job reported its timestamps" : undefined;
if (missing) console.error(`graphile_latency: ${missing}`);
console.log(JSON.stringify({ latencies, peak_rss_mib: process.resourceUsage().maxRSS / 1024 }));
