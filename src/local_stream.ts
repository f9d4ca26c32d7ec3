/**
 * The stream store of one process: it numbers each room's messages, stores them in batches
 * (one transaction per turn of the event loop, however many messages came in it) and hands
 * them to its subscriber only once they are stored. What keeps them is a {@link Backend}:
 * SQLite (`src/sqlite_store.ts`) or memory (`src/memory_store.ts`).
 * @module
 */
import type { MessageEvent } from "./protocol.ts";
import {
  type Appended,
  type Frame,
  newEpoch,
  type Receive,
  type StreamPage,
  type StreamQuery,
  type StreamStore,
} from "./store.ts";

/** A room's stream as a backend keeps it, besides its messages. */
export interface RoomState {
  room: string;
  epoch: string;
  /** The latest offset given out and stored. */
  head: number;
  /** See {@link StreamPage.lost}. */
  lost: number;
}

/** One batch of writes, stored all or nothing. */
export interface Batch {
  /** Rooms whose state changed (new rooms, new heads, new `lost`). */
  rooms: RoomState[];
  /** New messages, each with its offset, in order. */
  messages: { room: string; event: MessageEvent }[];
}

/**
 * Keeps rooms' streams for a {@link LocalStream}. Every method is synchronous; a failing
 * write throws and stores nothing of its batch.
 */
export interface Backend {
  /** A room's state, or undefined when it has no stream. */
  room(room: string): RoomState | undefined;
  /** Store a batch in one transaction, trimming each room to its retention. */
  write(batch: Batch): void;
  /** The kept messages a query asks for (see {@link StreamQuery}), each with its `offset`. */
  read(room: string, query: StreamQuery): MessageEvent[];
  /** The oldest kept offset of a room; undefined when none is kept. */
  first(room: string): number | undefined;
  /** Apply retention by age and total size; forget rooms with nothing kept that went cold. */
  sweep(): void;
  close(): void;
}

/** What a {@link LocalStream} is built from. */
export interface LocalStreamOptions {
  backend: Backend;
  /**
   * A batch of `messages` messages could not be stored (they are delivered without offsets),
   * or storing works again after failures (`err` undefined): the owner logs and counts it.
   */
  onWriteError?: (err: Error | undefined, messages: number) => void;
  /** How often {@link Backend.sweep} runs, in ms; never when 0. */
  sweepMs?: number;
  /**
   * Least time between two writes, in ms: a write waits until this long after the previous
   * one, so a busy store commits a batch every few ms instead of a few messages per turn of the
   * event loop (a commit costs SQLite far more than a row). A quiet store writes on the next
   * turn. 0 writes every turn.
   */
  commitIntervalMs?: number;
}

/** Rooms whose state a stream keeps in memory, at most; older ones are read back when needed. */
const MAX_CACHED_ROOMS = 10_000;

/** One frame waiting for the next write. */
interface Pending {
  room: string;
  frame: Frame;
  done: ((result: Appended) => void) | undefined;
}

/** The {@link StreamStore} of one process: numbers, batches, stores, then hands out. */
export class LocalStream implements StreamStore {
  readonly #backend: Backend;
  readonly #onWriteError: NonNullable<LocalStreamOptions["onWriteError"]>;
  /** Rooms' states as stored, then as numbered: a pending message's offset is already here. */
  readonly #rooms = new Map<string, RoomState>();
  /** Rooms whose state must be written with the next batch. */
  readonly #dirty = new Set<RoomState>();
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #receive: Receive | undefined;
  readonly #commitIntervalMs: number;
  /** When the last write started (`performance.now()`). */
  #lastWrite = -Infinity;
  #failing = false;
  #closed = false;

  constructor(options: LocalStreamOptions) {
    this.#backend = options.backend;
    this.#onWriteError = options.onWriteError ?? (() => {});
    this.#commitIntervalMs = options.commitIntervalMs ?? 0;
    if (options.sweepMs) {
      this.#sweepTimer = setInterval(() => this.#backend.sweep(), options.sweepMs);
      Deno.unrefTimer(this.#sweepTimer);
    }
  }

  append(room: string, frame: Frame, done?: (result: Appended) => void): void {
    if (this.#closed) throw new Error("append to a closed stream store");
    if (!(frame instanceof Uint8Array)) {
      const state = this.#state(room);
      frame.offset = ++state.head;
      this.#dirty.add(state);
    }
    this.#pending.push({ room, frame, done });
    this.#schedule();
  }

  listen(receive: Receive): void {
    this.#receive = receive;
  }

  read(room: string, query: StreamQuery): StreamPage {
    const state = this.#state(room);
    const head = this.#stored(state);
    const messages = this.#backend.read(room, query);
    const first = this.#backend.first(room) ?? head + 1;
    return { epoch: state.epoch, offset: head, first, lost: state.lost, messages };
  }

  /**
   * Store everything appended so far in one batch, then hand it to the subscriber. Runs on
   * its own one turn after the first append; {@link close} runs it too.
   */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const pending = this.#pending;
    if (pending.length === 0 && this.#dirty.size === 0) return;
    this.#pending = [];
    this.#lastWrite = performance.now();
    const rooms = [...this.#dirty];
    this.#dirty.clear();
    const messages: Batch["messages"] = [];
    for (const p of pending) {
      if (!(p.frame instanceof Uint8Array)) messages.push({ room: p.room, event: p.frame });
    }
    let stored = true;
    try {
      this.#backend.write({ rooms, messages });
      if (this.#failing) this.#onWriteError(undefined, 0);
      this.#failing = false;
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      stored = false;
      this.#failing = true;
      this.#unwind(rooms, messages);
      this.#onWriteError(err, messages.length);
    }
    for (const state of rooms) this.#touch(state);
    for (const p of pending) {
      const epoch = this.#rooms.get(p.room)?.epoch ?? "";
      if (!(p.frame instanceof Uint8Array)) {
        p.done?.(stored ? { epoch, offset: p.frame.offset! } : null);
      }
      this.#receive?.(p.room, epoch, p.frame);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    this.#backend.close();
  }

  /** Write on the next turn, or once {@link LocalStreamOptions.commitIntervalMs} has passed. */
  #schedule(): void {
    if (this.#timer !== undefined) return;
    const wait = this.#lastWrite + this.#commitIntervalMs - performance.now();
    this.#timer = setTimeout(() => this.flush(), Math.max(0, wait));
  }

  /**
   * A batch failed: give its rooms back the heads they had stored, mark where their streams
   * now miss messages, and take the offsets off the messages, which go out unnumbered.
   */
  #unwind(rooms: RoomState[], messages: Batch["messages"]): void {
    const firsts = new Map<string, number>();
    for (const { room, event } of messages) {
      if (!firsts.has(room)) firsts.set(room, event.offset!);
      delete event.offset;
    }
    for (const state of rooms) {
      const first = firsts.get(state.room);
      if (first === undefined) {
        this.#dirty.add(state); // a new room or a new `lost`: try again with the next batch
        continue;
      }
      state.head = first - 1;
      state.lost = state.head;
      this.#dirty.add(state);
    }
  }

  /** The offset up to which a room's messages are stored (its pending ones are above it). */
  #stored(state: RoomState): number {
    let head = state.head;
    for (const p of this.#pending) {
      if (p.room === state.room && !(p.frame instanceof Uint8Array)) {
        head = Math.min(head, p.frame.offset! - 1);
      }
    }
    return head;
  }

  /** A room's state: cached, read back, or new (a new epoch, stored with the next batch). */
  #state(room: string): RoomState {
    let state = this.#rooms.get(room);
    if (state === undefined) {
      state = this.#backend.room(room);
      if (state === undefined) {
        state = { room, epoch: newEpoch(), head: 0, lost: 0 };
        this.#dirty.add(state);
        this.#schedule();
      }
    }
    this.#touch(state);
    return state;
  }

  /** Keep a room's state cached as the most recently used; evict the least recent. */
  #touch(state: RoomState): void {
    this.#rooms.delete(state.room);
    this.#rooms.set(state.room, state);
    if (this.#rooms.size <= MAX_CACHED_ROOMS) return;
    for (const [room, old] of this.#rooms) {
      if (this.#rooms.size <= MAX_CACHED_ROOMS) break;
      if (this.#dirty.has(old) || this.#pending.some((p) => p.room === room)) continue;
      this.#rooms.delete(room);
    }
  }
}
