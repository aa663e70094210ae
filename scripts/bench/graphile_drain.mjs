// One drain of no-op jobs by Graphile Worker on its own schema, for
// peer_drain.py: a scratch database gets Graphile Worker's migrations, N jobs
// go in with addJobs, and runOnce drains them. Prints one JSON object.
//
// Graphile Worker deletes a job when it succeeds and keeps no history, so
// there are no timestamps to read back: the drain is timed from runOnce's
// start to its end. Before it, as `dawdle bench drain` does for its own
// table, the scratch database is vacuumed and analyzed and a checkpoint
// taken (skipped, and said so, where the role may not), so the worker meets
// settled jobs with fresh statistics. `--batched` turns on its documented throughput options
// (a local queue, batched completion); without it, its defaults.
//
// Usage: node graphile_drain.mjs --database-url URL --jobs N --concurrency C [--batched]
// (NODE_PATH must reach graphile-worker and pg.)

import { createRequire } from "node:module";
import { parseArgs } from "node:util";

import { workerOptions, workerPool } from "./graphile_common.mjs";

const require = createRequire(import.meta.url);
const { Logger, makeWorkerUtils, runMigrations, runOnce } = require("graphile-worker");
const pg = require("pg");

const SCRATCH = "dawdle_bench_graphile";
const ADD_BATCH = 10_000;

const { values } = parseArgs({
  options: {
    "database-url": { type: "string" },
    jobs: { type: "string" },
    concurrency: { type: "string" },
    batched: { type: "boolean", default: false },
  },
});
const url = values["database-url"];
const jobs = Number(values.jobs);
const concurrency = Number(values.concurrency);
if (!url || !(jobs >= 1) || !(concurrency >= 1)) {
  console.error("usage: graphile_drain.mjs --database-url URL --jobs N --concurrency C [--batched]");
  process.exit(2);
}

function withDatabase(database) {
  const parsed = new URL(url);
  parsed.pathname = "/" + database;
  return parsed.toString();
}

async function admin(sql) {
  const client = new pg.Client({ connectionString: withDatabase("postgres") });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

// VACUUM ANALYZE of the scratch database, then a CHECKPOINT if allowed.
async function settle() {
  const client = new pg.Client({ connectionString: withDatabase(SCRATCH) });
  await client.connect();
  try {
    await client.query("VACUUM ANALYZE");
    try {
      await client.query("CHECKPOINT");
    } catch (error) {
      if (error.code !== "42501") throw error;
      console.error("graphile_drain: CHECKPOINT refused to this role; draining without one");
    }
  } finally {
    await client.end();
  }
}

const quiet = new Logger(() => () => {});
const connectionString = withDatabase(SCRATCH);

await admin(`DROP DATABASE IF EXISTS ${SCRATCH} WITH (FORCE)`);
await admin(`CREATE DATABASE ${SCRATCH}`);
try {
  await runMigrations({ connectionString, logger: quiet });

  const utils = await makeWorkerUtils({ connectionString, logger: quiet });
  let started = performance.now();
  try {
    for (let left = jobs; left > 0; left -= ADD_BATCH) {
      const chunk = Math.min(left, ADD_BATCH);
      await utils.addJobs(Array.from({ length: chunk }, () => ({ identifier: "noop", payload: {} })));
    }
  } finally {
    await utils.release();
  }
  const enqueueSeconds = (performance.now() - started) / 1000;
  await settle();

  const worker = workerOptions(concurrency, values.batched);
  const pool = workerPool("graphile_drain", { connectionString, max: worker.maxPoolSize });
  let drainSeconds;
  let left;
  try {
    started = performance.now();
    await runOnce({
      pgPool: pool,
      concurrency,
      noHandleSignals: true,
      logger: quiet,
      taskList: { noop: async () => {} },
      preset: { worker },
    });
    drainSeconds = (performance.now() - started) / 1000;
    left = Number((await pool.query("SELECT count(*) AS n FROM graphile_worker._private_jobs")).rows[0].n);
  } finally {
    await pool.end();
  }
  // runOnce has been seen to return with a job still there: say so, and
  // count the rate on the jobs it ran, rather than lose the whole run.
  if (left !== 0) {
    console.error(`graphile_drain: Graphile Worker's runOnce returned with ${left} of ${jobs} jobs left`);
  }
  if (left >= jobs) {
    process.exit(1);
  }
  console.log(
    JSON.stringify({
      enqueue_jobs_per_second: jobs / enqueueSeconds,
      drain_jobs_per_second_wall: (jobs - left) / drainSeconds,
      jobs_left: left,
      peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    }),
  );
} finally {
  await admin(`DROP DATABASE IF EXISTS ${SCRATCH} WITH (FORCE)`);
}
