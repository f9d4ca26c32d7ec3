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

/** Longest a closing store waits for the worker to close its connection. */
export const STOP_TIMEOUT_MS = 1000;

/**
 * The worker, started with `{ path, intervalMs }`: its own connection checkpoints the log.
 * PASSIVE never waits for the writer: it copies what it can and leaves the rest for next
 * time. `{ stop }` (an `Int32Array` on shared memory) closes the connection and flips it, so
 * the store knows no file of its directory is open once its `close()` returns. Inline rather
 * than a module of its own, so starting it loads nothing from disk (no module cache to wait
 * on) and `deno compile` needs no `--include` for it.
 */
const WORKER_SOURCE = `
import { DatabaseSync } from "node:sqlite";
let db, timer;
self.onmessage = (e) => {
  if (e.data.stop) {
    clearInterval(timer);
    db?.close();
    Atomics.store(e.data.stop, 0, 1);
    Atomics.notify(e.data.stop, 0);
    return;
  }
  db = new DatabaseSync(e.data.path, { timeout: 1000 });
  timer = setInterval(() => db.exec("PRAGMA wal_checkpoint(PASSIVE)"), e.data.intervalMs);
};
`;

/**
 * Start checkpointing `path`, which `db` (the store's connection) has open in WAL mode.
 * Returns what stops it, once the worker closed its connection. If the worker fails, the
 * connection checkpoints by itself again at SQLite's usual pace.
 */
export function startCheckpoints(db: DatabaseSync, path: string): () => void {
  db.exec(`PRAGMA wal_autocheckpoint = ${BACKSTOP_PAGES}`);
  const source = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  const worker = new Worker(source, { type: "module", name: "chorus-checkpoints" });
  URL.revokeObjectURL(source);
  let stopped = false;
  let failed = false;
  worker.onerror = (e) => {
    e.preventDefault(); // answered here: the store checkpoints in its own commits again
    failed = true;
    worker.terminate();
    if (!stopped && db.isOpen) db.exec("PRAGMA wal_autocheckpoint = 1000");
  };
  worker.postMessage({ path, intervalMs: CHECKPOINT_INTERVAL_MS });
  return () => {
    stopped = true;
    if (!failed) {
      // Blocks this thread for as long as a checkpoint in progress takes (milliseconds),
      // at most STOP_TIMEOUT_MS: closing happens at shutdown, never on the hot path.
      const closed = new Int32Array(new SharedArrayBuffer(4));
      worker.postMessage({ stop: closed });
      Atomics.wait(closed, 0, 0, STOP_TIMEOUT_MS);
    }
    worker.terminate();
  };
}
