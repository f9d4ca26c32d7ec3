/**
 * Room history behind a small store interface: what a room said lately, for the `welcome` of
 * each newcomer and for recovery after a reconnect. {@link MemoryHistory} keeps it in this
 * process; a durable or shared store plugs in by implementing {@link HistoryStore}.
 * @module
 */
import type { MessageEvent } from "./protocol.ts";

/** The messages a member gets on joining, and whether they reach back far enough. */
export interface Recovery {
  messages: MessageEvent[];
  /** False when the position asked for is no longer kept: the member may have missed some. */
  recovered: boolean;
}

/** Where a hub keeps each room's recent messages. */
export interface HistoryStore {
  /** Keep `event` as the newest message of `room`, trimming the oldest beyond the store's bounds. */
  append(room: string, event: MessageEvent): void;
  /** The kept messages after the one with id `after`; all of them when `after` is undefined. */
  after(room: string, after?: string): Recovery;
  /** Replace a room's kept messages, e.g. with a shared store's copy of them. */
  replace(room: string, events: MessageEvent[]): void;
  /** Someone is in `room` again: its history must not expire. */
  occupied(room: string): void;
  /** Nobody on any hub is in `room` any more: its history expires after the store's TTL. */
  vacated(room: string): void;
  /** Drop the history of every room that has been empty for longer than the TTL. */
  expire(): void;
}

/** What a {@link MemoryHistory} is built from. */
export interface MemoryHistoryOptions {
  /** Messages kept per room; 0 keeps none. */
  limit: number;
  /** Milliseconds an empty room's history is kept. */
  ttlMs: number;
  /** Memory all rooms' histories may use together, in bytes (approximate). */
  maxBytes: number;
  /** Whether anyone is in a room now, so a message to an empty room starts its TTL. */
  occupied(room: string): boolean;
  /** Clock in ms since the epoch; injectable so tests can expire history instantly. */
  now(): number;
  /**
   * How far back (ms) a recovery reaches for messages of other hubs, which a bus may have
   * ordered differently here than on the hub the client saw them on; 0 without a bus.
   */
  reorderWindowMs: number;
}

interface Kept {
  messages: MessageEvent[];
  /** Approximate memory of `messages`, counted against `maxBytes`. */
  bytes: number;
  /** When the room became empty, or null while it has members. */
  emptySince: number | null;
}

/** What a kept message costs: its text plus a rough allowance for the event object. */
function sizeOf(event: MessageEvent): number {
  return 2 * (event.text.length + event.from.name.length) + 160;
}

/** Histories in this process, under a per-room count and one memory budget for all rooms. */
export class MemoryHistory implements HistoryStore {
  readonly #options: MemoryHistoryOptions;
  /** Kept in least-recently-used order, so the budget evicts cold rooms first. */
  readonly #rooms = new Map<string, Kept>();
  #bytes = 0;

  constructor(options: MemoryHistoryOptions) {
    this.#options = options;
  }

  /** Approximate bytes kept by all rooms together. */
  get bytes(): number {
    return this.#bytes;
  }

  append(room: string, event: MessageEvent): void {
    const { limit, maxBytes } = this.#options;
    if (limit === 0) return;
    let kept = this.#rooms.get(room);
    if (kept) this.#rooms.delete(room); // re-inserted below: the Map stays in LRU order
    else {
      // A message published to an empty room must expire too.
      kept = { messages: [], bytes: 0, emptySince: this.#emptySince(room) };
    }
    this.#rooms.set(room, kept);
    kept.messages.push(event);
    const size = sizeOf(event);
    kept.bytes += size;
    this.#bytes += size;
    if (kept.messages.length > limit) this.#evictOldest(room, kept);
    // Over the budget: forget the least recently used rooms' oldest messages first.
    for (const [name, lru] of this.#rooms) {
      if (this.#bytes <= maxBytes) break;
      while (lru.messages.length > 0 && this.#bytes > maxBytes) this.#evictOldest(name, lru);
    }
  }

  after(room: string, after?: string): Recovery {
    const messages = this.#live(room)?.messages ?? [];
    if (after === undefined) return { messages: messages.slice(), recovered: true };
    const at = messages.findIndex((m) => m.id === after);
    if (at === -1) return { messages: messages.slice(), recovered: false };
    const later = messages.slice(at + 1);
    const window = this.#options.reorderWindowMs;
    if (window === 0) return { messages: later, recovered: true };
    // Other hubs' messages may sit just before `after` here yet came after it where the
    // client saw them; resend those few too (clients skip ids they have already shown).
    const node = after.slice(0, after.indexOf("-"));
    const cutoff = messages[at]!.ts - window;
    const before: MessageEvent[] = [];
    for (let i = at - 1; i >= 0 && messages[i]!.ts >= cutoff; i--) {
      if (!messages[i]!.id.startsWith(node + "-")) before.unshift(messages[i]!);
    }
    return { messages: [...before, ...later], recovered: true };
  }

  replace(room: string, events: MessageEvent[]): void {
    const old = this.#rooms.get(room);
    if (old) {
      this.#rooms.delete(room);
      this.#bytes -= old.bytes;
    }
    for (const event of events) this.append(room, event);
  }

  occupied(room: string): void {
    const kept = this.#rooms.get(room);
    if (kept) kept.emptySince = null;
  }

  vacated(room: string): void {
    const kept = this.#rooms.get(room);
    if (kept) kept.emptySince = this.#options.now();
  }

  expire(): void {
    const cutoff = this.#options.now() - this.#options.ttlMs;
    for (const [room, kept] of this.#rooms) this.#expire(room, kept, cutoff);
  }

  /** A room's history unless it expired; {@link expire} sweeps the other rooms. */
  #live(room: string): Kept | undefined {
    const kept = this.#rooms.get(room);
    const cutoff = this.#options.now() - this.#options.ttlMs;
    return kept && !this.#expire(room, kept, cutoff) ? kept : undefined;
  }

  /** Drop one room's history if it has been empty since before `cutoff`; true if dropped. */
  #expire(room: string, kept: Kept, cutoff: number): boolean {
    if (kept.emptySince === null || kept.emptySince > cutoff) return false;
    this.#rooms.delete(room);
    this.#bytes -= kept.bytes;
    return true;
  }

  #emptySince(room: string): number | null {
    return this.#options.occupied(room) ? null : this.#options.now();
  }

  #evictOldest(room: string, kept: Kept): void {
    const size = sizeOf(kept.messages.shift()!);
    kept.bytes -= size;
    this.#bytes -= size;
    if (kept.messages.length === 0) this.#rooms.delete(room);
  }
}
