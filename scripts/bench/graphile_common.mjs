// What graphile_drain.mjs and graphile_latency.mjs share: the worker's
// options, its defaults or its documented batching options, and a pool of
// our own for it.

import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const pg = require("pg");

// Graphile Worker's `worker` preset for `concurrency` jobs at a time; with
// `batched`, a local queue of at least 100 jobs and completions batched
// without delay.
export function workerOptions(concurrency, batched) {
  const worker = { concurrentJobs: concurrency, maxPoolSize: concurrency + 2 };
  if (batched) {
    worker.localQueue = { size: Math.max(concurrency + 1, 100) };
    worker.completeJobBatchDelay = 0;
    worker.failJobBatchDelay = 0;
  }
  return worker;
}

// A pool for the worker, ours so that it is closed before a scratch database
// is dropped (an idle connection the server ended under a pool of Graphile
// Worker's own made the process die on an unhandled error event). Errors are
// reported under `name`, on the pool and on each client: Graphile Worker asks
// for a handler on each client too, or an error on a checked-out connection
// would end the process.
export function workerPool(name, options) {
  const pool = new pg.Pool(options);
  pool.on("error", (error) => console.error(`${name}: idle connection lost: ${error.message}`));
  pool.on("connect", (client) =>
    client.on("error", (error) => console.error(`${name}: connection error: ${error.message}`)),
  );
  return pool;
}
