/**
 * The stream store: where each room's conversation is kept as a log, numbered and in one
 * order. A room's chat messages get consecutive offsets (1, 2, 3, …) within an epoch, an opaque
 * string that changes only when the room's stream starts over (its store was wiped, or the
 * room expired whole). The store is also the sequencer: every hub hands it what its members
 * send, and hears back every room's frames, numbered, in the one order every member of the
 * room receives them. `docs/protocol.md` ("Offsets and epochs") is the prose twin.
 *
 * Implementations: {@link LocalStream} over SQLite (`src/sqlite_store.ts`, the default) or
 * memory (`src/memory_store.ts`) in one process; the store host of `--workers`
 * (`src/store_host.ts`), which serves one local stream to every worker; and the Redis
 * backplane (`src/redis_bus.ts`), where Redis numbers and keeps the stream for every instance.
 * @module
 */
import type { MessageEvent } from "./protocol.ts";

/** A point in a room's stream: "offset N of epoch E". */
export interface Position {
  epoch: string;
  /** The offset of a message; 0 before the first one. */
  offset: number;
}

/**
 * What a hub hands the store and hears back: a chat message (stored, numbered) or a raw
 * client's binary frame (neither stored nor numbered, but kept in the room's order).
 */
export type Frame = MessageEvent | Uint8Array;

/** Which kept messages a {@link StreamStore.read} asks for; `limit` is at least 1. */
export type StreamQuery =
  /** The oldest `limit` messages after offset `after`, oldest first. */
  | { after: number; limit: number }
  /** The newest `limit` messages before offset `before`, newest first. */
  | { before: number; limit: number }
  /** The newest `limit` messages, oldest first (a `welcome`'s history). */
  | { last: number };

/** A room's stream as a read finds it, with the messages asked for. */
export interface StreamPage extends Position {
  /**
   * The room's latest offset (the {@link Position}'s `offset`): 0 for a stream nothing was
   * sent to yet. A read of a room that has no stream yet starts one: it gets its epoch.
   */
  offset: number;
  /** The offset of the oldest message still kept; `offset + 1` when none is kept. */
  first: number;
  /**
   * Messages after this offset were delivered but could not be stored (a full disk, say): a
   * resume from this offset or before it is not complete. 0 when nothing was lost.
   */
  lost: number;
  /** The messages asked for, each with its `offset`, in the query's order. */
  messages: MessageEvent[];
}

/** What happened to one appended message, for those who asked (the publish API). */
export type Appended =
  /** Stored, with the position it was given. */
  | Position
  /** Delivered, but it could not be stored (and so has no offset). */
  | null;

/**
 * Receives every room's frames once they are stored, in each room's order. `epoch` is the
 * room's epoch at that moment; a message that could not be stored comes without `offset`.
 */
export type Receive = (room: string, epoch: string, frame: Frame) => void;

/** A room's kept stream, and the sequencer that puts every room's frames in one order. */
export interface StreamStore {
  /**
   * Put a frame at the end of its room's stream. A message's `offset` is set by the store
   * (whatever it carries is ignored); it reaches every subscriber only once stored.
   * `done`, when given, is told the message's fate once that is known.
   */
  append(room: string, frame: Frame, done?: (result: Appended) => void): void;
  /**
   * Set the one receiver of stored frames. A store of one process calls it for every room; a
   * shared store (Redis) only for the rooms its hub watches. (Not `subscribe`: the Redis
   * backplane is a {@link Bus} too, whose `subscribe` takes presence messages.)
   */
  listen(receive: Receive): void;
  /** Read a room's kept stream; synchronous for a store in this process. */
  read(room: string, query: StreamQuery): StreamPage | Promise<StreamPage>;
  /**
   * Only on a store in this process: store and hand out what is pending now rather than on
   * the next turn (a hub's flush before closing its sockets, and tests over stub peers).
   */
  flush?(): void;
  /** Store what is pending, then let go of files and connections. */
  close(): void | Promise<void>;
}

/** A fresh epoch: opaque to clients, unique enough never to repeat for one room. */
export function newEpoch(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}
