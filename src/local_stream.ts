/**
 * The stream store of one process: it numbers each room's messages, stores them in batches
 * (one transaction per turn of the event loop, however many messages came in it) and hands
 * them to its subscriber only once they are stored. What keeps them is a {@link Backend}:
 * SQLite (`src/sqlite_store.ts`) or memory (`src/memory_store.ts`).
 * @module
 */
import type { MessageEvent } from "./protocol.ts";
import type { Appended, Frame, Receive, StreamPage, StreamQuery, StreamStore } from "./store.ts";

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
