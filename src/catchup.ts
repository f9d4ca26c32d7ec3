/**
 * Members catching up on a long gap: a client that resumes after more messages than
 * `--history` gets its `welcome`, then the rest as ordinary `message` events, in order and
 * before anything new. A gap may be thousands of messages, more than a socket may queue
 * (`--max-buffered-bytes`), so it is written in chunks as the socket drains, and whatever the
 * room says meanwhile waits behind it. Once caught up, the member joins its room's fan-out.
 * @module
 */
import { utf8Length } from "./metrics.ts";
import type { Peer } from "./transport.ts";

/**
 * Largest frame of a catch-up, in bytes (or half of `maxBufferedBytes`, when that is less):
 * many events, coalesced as room frames are.
 */
export const CATCH_UP_CHUNK_BYTES = 64 * 1024;

/** How often a catching-up socket is looked at to see whether it drained. */
export const CATCH_UP_POLL_MS = 10;

/** What {@link CatchUps} needs from its hub. */
export interface CatchUpOptions {
  /** Unsent bytes a socket may hold; a chunk is written only below half of it. */
  maxBufferedBytes: number;
  /** Write one frame of `events` newline-joined events; false when the peer is gone. */
  write(peer: Peer, frame: string, bytes: number, events: number): boolean;
  /** The peer has caught up: from now on it gets the room's events with everyone else. */
  caughtUp(peer: Peer): void;
  /** More came in for the peer while it caught up than it may queue: it reads too slowly. */
  slow(peer: Peer): void;
}

interface Catching {
  readonly peer: Peer;
  readonly room: string;
  lines: string[];
  /** Index of the next line to write. */
  next: number;
  /** Bytes of the lines the room added while catching up; bounded by maxBufferedBytes. */
  live: number;
}

/** Every member of one hub that is catching up. */
export class CatchUps {
  readonly #options: CatchUpOptions;
  readonly #peers = new Map<Peer, Catching>();
  readonly #rooms = new Map<string, Set<Catching>>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: CatchUpOptions) {
    this.#options = options;
  }

  /** Whether a peer is catching up (and is not yet in its room's fan-out). */
  has(peer: Peer): boolean {
    return this.#peers.has(peer);
  }

  /** Whether a member of `room` is catching up. */
  inRoom(room: string): boolean {
    return this.#rooms.has(room);
  }

  /** Start writing `lines` (the welcome first) to a peer of `room`. */
  start(peer: Peer, room: string, lines: string[]): void {
    const catching: Catching = { peer, room, lines, next: 0, live: 0 };
    this.#peers.set(peer, catching);
    let set = this.#rooms.get(room);
    if (!set) this.#rooms.set(room, set = new Set());
    set.add(catching);
    this.#pump(catching);
    this.#schedule();
  }

  /** An event for a room: it queues behind the gap of every peer of the room catching up. */
  toRoom(room: string, line: string, except?: Peer): void {
    const set = this.#rooms.get(room);
    if (!set) return;
    for (const catching of set) if (catching.peer !== except) this.#add(catching, line);
  }

  /** An event for one peer; false when that peer is not catching up. */
  toPeer(peer: Peer, line: string): boolean {
    const catching = this.#peers.get(peer);
    if (!catching) return false;
    this.#add(catching, line);
    return true;
  }

  /** The peer left: forget it. */
  cancel(peer: Peer): void {
    const catching = this.#peers.get(peer);
    if (!catching) return;
    this.#peers.delete(peer);
    const set = this.#rooms.get(catching.room)!;
    set.delete(catching);
    if (set.size === 0) this.#rooms.delete(catching.room);
  }

  /** Stop the timer; nothing more is written. */
  dispose(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #add(catching: Catching, line: string): void {
    catching.lines.push(line);
    catching.live += line.length;
    if (catching.live > this.#options.maxBufferedBytes) {
      this.cancel(catching.peer);
      this.#options.slow(catching.peer);
    }
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#peers.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      for (const catching of [...this.#peers.values()]) this.#pump(catching);
      this.#schedule();
    }, CATCH_UP_POLL_MS);
  }

  /** Write chunks while the socket has room; hand the peer to its room once all is written. */
  #pump(catching: Catching): void {
    const { peer, lines } = catching;
    while (catching.next < lines.length) {
      if (peer.bufferedAmount > this.#options.maxBufferedBytes / 2) return;
      const start = catching.next;
      let bytes = 0;
      const chunk = Math.min(CATCH_UP_CHUNK_BYTES, this.#options.maxBufferedBytes / 2);
      while (catching.next < lines.length && (bytes === 0 || bytes < chunk)) {
        bytes += utf8Length(lines[catching.next]!) + 1;
        catching.next++;
      }
      const frame = lines.slice(start, catching.next).join("\n");
      if (!this.#options.write(peer, frame, bytes - 1, catching.next - start)) {
        this.cancel(peer);
        return;
      }
    }
    this.cancel(peer);
    this.#options.caughtUp(peer);
  }
}
