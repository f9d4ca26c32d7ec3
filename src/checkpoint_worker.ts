/**
 * The worker that checkpoints the SQLite store's write-ahead log (see `src/checkpoints.ts`):
 * its own connection copies committed pages into the database file and syncs it, so those
 * writes and syncs never stop chorus' event loop. Started with `{ path, intervalMs }`.
 * @module
 */
/// <reference lib="deno.worker" />
import { DatabaseSync } from "node:sqlite";

/** The start message. */
export interface CheckpointStart {
  /** The database file. */
  path: string;
  /** Time between two checkpoints, in ms. */
  intervalMs: number;
}

self.onmessage = (e: MessageEvent<CheckpointStart>) => {
  const db = new DatabaseSync(e.data.path, { timeout: 1000 });
  // PASSIVE never waits for the writer: it copies what it can and leaves the rest for next time.
  setInterval(() => db.exec("PRAGMA wal_checkpoint(PASSIVE)"), e.data.intervalMs);
};
