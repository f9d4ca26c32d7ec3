// TEMPORARY STUB until the issue13-sqlite branch merges.
import type { Backend } from "./local_stream.ts";
import { MemoryBackend } from "./memory_store.ts";
export class StoreOpenError extends Error {}
export class SqliteBackend {
  static open(
    _dir: string,
    o: { retainMessages: number; retainMs: number; retainBytes: number },
  ): Backend {
    return new MemoryBackend({ ...o, maxBytes: o.retainBytes });
  }
}
