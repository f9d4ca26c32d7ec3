/**
 * Checkpoints of the SQLite store off the event loop. In WAL mode, commits append to the log;
 * a checkpoint copies the log into the database file and syncs it (twice with
 * `synchronous=NORMAL`), which takes milliseconds, or far longer on a busy disk. SQLite's
 * automatic checkpoint runs inside a commit, so it stopped chorus' event loop: measured here,
 * it made one write in a hundred take 12 ms instead of 2 (docs/performance.md, "Issue #13").
 * A worker thread with its own connection checkpoints instead, and the store's own connection
 * keeps an automatic checkpoint only as a backstop, far above what the worker leaves behind.
 * @module
 */
import type { DatabaseSync } from "node:sqlite";
import type { CheckpointStart } from "./checkpoint_worker.ts";

/** How often the worker checkpoints. */
export const CHECKPOINT_INTERVAL_MS = 500;

/**
 * WAL pages after which a commit checkpoints by itself (SQLite's default is 1,000): reached
 * only if the worker stops or falls far behind, so the log stays bounded whatever happens.
 */
export const BACKSTOP_PAGES = 16_384;

/**
 * Start checkpointing `path`, which `db` (the store's connection) has open in WAL mode.
 * Returns what stops it. If the worker fails, the connection checkpoints by itself again at
 * SQLite's usual pace.
 */
export function startCheckpoints(db: DatabaseSync, path: string): () => void {
  db.exec(`PRAGMA wal_autocheckpoint = ${BACKSTOP_PAGES}`);
  const worker = new Worker(new URL("./checkpoint_worker.ts", import.meta.url), {
    type: "module",
    name: "chorus-checkpoints",
  });
  let stopped = false;
  worker.onerror = (e) => {
    e.preventDefault(); // answered here: the store checkpoints in its own commits again
    worker.terminate();
    if (!stopped && db.isOpen) db.exec("PRAGMA wal_autocheckpoint = 1000");
  };
  worker.postMessage({ path, intervalMs: CHECKPOINT_INTERVAL_MS } satisfies CheckpointStart);
  return () => {
    stopped = true;
    worker.terminate();
  };
}
