/**
 * The {@link Backend} of `--store memory`: rooms' streams in this process only, for those who
 * want nothing on disk. Bounded like the SQLite store by messages per room and age, and by one
 * memory budget for all rooms, which trims the least recently written rooms first.
 * @module
 */
import type { Backend, Batch, RoomState } from "./local_stream.ts";
import type { MessageEvent } from "./protocol.ts";
import type { StreamQuery } from "./store.ts";

/** What a {@link MemoryBackend} keeps. */
export interface MemoryOptions {
  /** Messages kept per room; 0 keeps none. */
  retainMessages: number;
  /** Milliseconds a message is kept. */
  retainMs: number;
  /** Memory all rooms' messages may use together, in bytes (approximate). */
  maxBytes: number;
  /** Clock in ms since the epoch; injectable for tests. */
  now?: () => number;
}

interface Kept {
  state: RoomState;
  messages: MessageEvent[];
  bytes: number;
  /** When the room was last written to. */
  written: number;
}

/** What a kept message costs: its text plus a rough allowance for the event object. */
function sizeOf(event: MessageEvent): number {
  return 2 * (event.text.length + event.from.name.length) + 160;
}

/** Rooms' streams in a `Map`, in least-recently-written order so the budget trims cold rooms. */
export class MemoryBackend implements Backend {
  readonly #options: MemoryOptions;
  readonly #now: () => number;
  readonly #rooms = new Map<string, Kept>();
  #bytes = 0;

  constructor(options: MemoryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Approximate bytes kept by all rooms together. */
  get bytes(): number {
    return this.#bytes;
  }

  room(room: string): RoomState | undefined {
    const state = this.#rooms.get(room)?.state;
    return state && { ...state };
  }

  write(batch: Batch): void {
    const now = this.#now();
    for (const state of batch.rooms) {
      const kept = this.#kept(state.room, now);
      kept.state = { ...state };
    }
    for (const { room, event } of batch.messages) {
      const kept = this.#kept(room, now);
      if (this.#options.retainMessages === 0) continue;
      kept.messages.push(event);
      const size = sizeOf(event);
      kept.bytes += size;
      this.#bytes += size;
      if (kept.messages.length > this.#options.retainMessages) this.#dropOldest(kept);
    }
    for (const kept of this.#rooms.values()) {
      if (this.#bytes <= this.#options.maxBytes) break;
      while (kept.messages.length > 0 && this.#bytes > this.#options.maxBytes) {
        this.#dropOldest(kept);
      }
    }
  }

  read(room: string, query: StreamQuery): MessageEvent[] {
    const messages = this.#rooms.get(room)?.messages ?? [];
    if ("last" in query) return messages.slice(Math.max(0, messages.length - query.last));
    if ("after" in query) {
      const at = messages.findIndex((m) => m.offset! > query.after);
      return at === -1 ? [] : messages.slice(at, at + query.limit);
    }
    const out: MessageEvent[] = [];
    for (let i = messages.length - 1; i >= 0 && out.length < query.limit; i--) {
      if (messages[i]!.offset! < query.before) out.push(messages[i]!);
    }
    return out;
  }

  first(room: string): number | undefined {
    return this.#rooms.get(room)?.messages[0]?.offset;
  }

  sweep(): void {
    const cutoff = this.#now() - this.#options.retainMs;
    for (const [room, kept] of this.#rooms) {
      while (kept.messages.length > 0 && kept.messages[0]!.ts < cutoff) this.#dropOldest(kept);
      if (kept.messages.length === 0 && kept.written < cutoff) this.#rooms.delete(room);
    }
  }

  close(): void {}

  /** A room's entry, moved to the most recently written end. */
  #kept(room: string, now: number): Kept {
    let kept = this.#rooms.get(room);
    if (kept) this.#rooms.delete(room);
    else {kept = {
        state: { room, epoch: "", head: 0, lost: 0 },
        messages: [],
        bytes: 0,
        written: 0,
      };}
    kept.written = now;
    this.#rooms.set(room, kept);
    return kept;
  }

  #dropOldest(kept: Kept): void {
    const size = sizeOf(kept.messages.shift()!);
    kept.bytes -= size;
    this.#bytes -= size;
  }
}
