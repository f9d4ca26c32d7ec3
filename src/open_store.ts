/**
 * The stream store a config asks for, in one process: SQLite under `--data-dir` (the default),
 * or memory. Redis is the backplane's own (`src/redis_bus.ts`), and the workers of `--workers`
 * reach the main thread's store through `src/store_host.ts`.
 * @module
 */
import type { Config } from "./config.ts";
import { LocalStream } from "./local_stream.ts";
import type { Logger } from "./log.ts";
import { MemoryBackend } from "./memory_store.ts";
import { C } from "./metrics.ts";
import { SqliteBackend } from "./sqlite_store.ts";

/** How often a store applies retention by age and size. */
export const SWEEP_MS = 60_000;

const DAY_MS = 24 * 3600_000;

/**
 * Least time between two SQLite commits (see `LocalStreamOptions.commitIntervalMs`): under
 * load a message waits at most this long before it is stored and delivered; a quiet room's
 * message is stored on the next turn. See docs/performance.md, "Issue #13".
 */
export const SQLITE_COMMIT_INTERVAL_MS = 1;

/**
 * Open the local store of `config.store` (`sqlite` or `memory`). Opening SQLite checks the data
 * directory at once: it throws {@link StoreOpenError} naming the path when it cannot be used.
 * Write failures are logged at error level (once when they start, once when they stop) and
 * counted into `row` (a hub's metrics row, or the store host's).
 */
export function openStore(
  config: Pick<
    Config,
    | "store"
    | "dataDir"
    | "retainMessages"
    | "retainDays"
    | "retainBytes"
    | "storeSync"
    | "historyMaxBytes"
  >,
  log: Logger,
  row: Float64Array,
): LocalStream {
  const retainMs = config.retainDays * DAY_MS;
  const backend = config.store === "sqlite"
    ? SqliteBackend.open(config.dataDir, {
      retainMessages: config.retainMessages,
      retainMs,
      retainBytes: config.retainBytes,
      synchronous: config.storeSync,
    })
    : new MemoryBackend({
      retainMessages: config.retainMessages,
      retainMs,
      maxBytes: config.historyMaxBytes,
    });
  backend.sweep();
  let failing = false;
  return new LocalStream({
    backend,
    sweepMs: SWEEP_MS,
    // A commit costs SQLite ~20 µs whatever it holds; memory writes cost next to nothing.
    commitIntervalMs: config.store === "sqlite" ? SQLITE_COMMIT_INTERVAL_MS : 0,
    onWriteError(err, messages) {
      if (err === undefined) {
        failing = false;
        log.info("store writes again", { store: config.store });
        return;
      }
      row[C.storeErrors]!++;
      row[C.unstored]! += messages;
      // Once per failing stretch: a full disk fails every batch until space is freed.
      if (!failing) {
        log.error("store write failed; messages go out unstored", {
          store: config.store,
          path: config.store === "sqlite" ? config.dataDir : undefined,
          error: err.message.split("\n")[0],
          messages,
        });
      }
      failing = true;
    },
  });
}
