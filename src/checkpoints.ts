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

/** How often the worker checkpoints. */
export const CHECKPOINT_INTERVAL_MS = 500;

/**
 * WAL pages after which a commit checkpoints by itself (SQLite's default is 1,000): reached
 * only if the worker stops or falls far behind, so the log stays bounded whatever happens.
 */
export const BACKSTOP_PAGES = 16_384;

/**
 * The worker, started with `{ path, intervalMs }`: its own connection checkpoints the log.
 * PASSIVE never waits for the writer: it copies what it can and leaves the rest for next
 * time. Inline rather than a module of its own, so starting it loads nothing from disk (no
 * module cache to wait on) and `deno compile` needs no `--include` for it.
 */
const WORKER_SOURCE = `
import { DatabaseSync } from "node:sqlite";
self.onmessage = (e) => {
  const db = new DatabaseSync(e.data.path, { timeout: 1000 });
  setInterval(() => db.exec("PRAGMA wal_checkpoint(PASSIVE)"), e.data.intervalMs);
};
`;

/**
 * Start checkpointing `path`, which `db` (the store's connection) has open in WAL mode.
 * Returns what stops it. If the worker fails, the connection checkpoints by itself again at
 * SQLite's usual pace.
 */
export function startCheckpoints(db: DatabaseSync, path: string): () => void {
  db.exec(`PRAGMA wal_autocheckpoint = ${BACKSTOP_PAGES}`);
  const source = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  const worker = new Worker(source, { type: "module", name: "chorus-checkpoints" });
  URL.revokeObjectURL(source);
  let stopped = false;
  worker.onerror = (e) => {
    e.preventDefault(); // answered here: the store checkpoints in its own commits again
    worker.terminate();
    if (!stopped && db.isOpen) db.exec("PRAGMA wal_autocheckpoint = 1000");
  };
  worker.postMessage({ path, intervalMs: CHECKPOINT_INTERVAL_MS });
  return () => {
    stopped = true;
    worker.terminate();
  };
}
