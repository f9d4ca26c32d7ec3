/**
 * The outbox: everything between "this event is for these peers" and the frames written to
 * them. Chat events are batched until a later turn of the event loop, then each room's batch
 * goes out as one frame shared by its chat peers, and a peer with events of its own (a
 * `welcome`, an `error`) gets one frame of its own with the room's events mixed in, in order.
 * Every write is checked for slow readers. The outbox owns all queued-frame state.
 * @module
 */
import { C, type Metrics } from "./metrics.ts";
import { OPEN, type Peer } from "./transport.ts";

/** How long a peer over `maxBufferedBytes` gets to drain before it counts as slow. */
export const SLOW_CONSUMER_GRACE_MS = 100;

/** A queue this many times `maxBufferedBytes` is slow at once, without a grace turn. */
export const SLOW_CONSUMER_HARD_FACTOR = 4;

/** What an outbox is built from. */
export interface OutboxOptions {
  /** A peer whose unsent queue passes this many bytes is slow; see {@link onSlow}. */
  maxBufferedBytes: number;
  /** Counts delivered messages and bytes out. */
  metrics: Metrics;
  /** A peer read too slowly; the owner closes it (the outbox has already forgotten it). */
  onSlow(peer: Peer): void;
  /** A peer threw on `send`: it is gone, and the owner removes it. */
  onBroken(peer: Peer): void;
}

/** Lines waiting to become one newline-joined frame. */
interface Lines {
  lines: string[];
  /** UTF-8 bytes of `lines` plus their separators. */
  bytes: number;
}

/** A room's shared batch, and the peers of the room that get a frame of their own instead. */
interface Batch extends Lines {
  /** Made on the first peer that needs one: most batches have none. */
  privates: Set<Peer> | undefined;
}

/** Queues and writes frames for every peer of one hub. */
export class Outbox {
  readonly #options: OutboxOptions;
  readonly #row: Float64Array;
  /** Pending batches, keyed by the chat peers of their room. */
  #batches = new Map<Set<Peer>, Batch>();
  /** Peers with a frame of their own pending. */
  #own = new Map<Peer, Lines>();
  /** The maps {@link flush} is writing, emptied and swapped back in: no new maps per flush. */
  #flushingBatches = new Map<Set<Peer>, Batch>();
  #flushingOwn = new Map<Peer, Lines>();
  /** Peers over `maxBufferedBytes` right after a write, judged again after a grace. */
  readonly #suspects = new Set<Peer>();
  #suspectTimer: ReturnType<typeof setTimeout> | undefined;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: OutboxOptions) {
    this.#options = options;
    this.#row = options.metrics.row;
  }

  /** Write one frame to every open peer of `peers` now: the raw fan-out, a plain loop. */
  sendAll(peers: Set<Peer>, data: string | ArrayBuffer, bytes: number): void {
    const row = this.#row;
    for (const peer of peers) {
      if (this.#send(peer, data, bytes)) row[C.delivered]!++;
    }
  }

  /** Write one frame of `events` newline-joined events to a peer now, checked and counted. */
  write(peer: Peer, frame: string, bytes: number, events: number): boolean {
    if (!this.#send(peer, frame, bytes)) return false;
    this.#row[C.delivered]! += events;
    return true;
  }

  /** Queue an event line for every peer of `room` (a room's chat peers) but `except`. */
  toRoom(room: Set<Peer>, line: string, bytes: number, except?: Peer): void {
    if (room.size === 0) return;
    const batch = this.#batchOf(room);
    // The excluded peer must not get the shared frame: it gets the batch so far, without this.
    if (except !== undefined && room.has(except) && !this.#own.has(except)) {
      this.#privatize(except, batch, true);
    }
    if (batch.privates) {
      for (const peer of batch.privates) {
        if (peer !== except) push(this.#own.get(peer)!, line, bytes);
      }
    }
    push(batch, line, bytes);
    this.#scheduleFlush();
  }

  /**
   * Queue an event line for one peer of `room`, in its place among the room's events. A
   * `fresh` peer (one just welcomed, whose welcome already holds the room's state) does not
   * inherit the room's pending events.
   */
  toPeer(room: Set<Peer>, peer: Peer, line: string, bytes: number, fresh = false): void {
    let own = this.#own.get(peer);
    if (own === undefined) own = this.#privatize(peer, this.#batchOf(room), !fresh);
    push(own, line, bytes);
  }

  /** Forget everything queued for a peer that left `room`. */
  forget(peer: Peer, room: Set<Peer>): void {
    this.#own.delete(peer);
    this.#suspects.delete(peer);
    this.#batches.get(room)?.privates?.delete(peer);
  }

  /**
   * Write everything queued now. The queues are taken before anything is written, so what a
   * write causes (a dropped peer's `leave`) is queued for the next flush, exactly once.
   */
  flush(): void {
    const batches = this.#batches;
    const own = this.#own;
    // Asked from inside a flush (by code reacting to a write): the scheduled flush will do it.
    if (batches === this.#flushingBatches) return;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#batches = this.#flushingBatches;
    this.#own = this.#flushingOwn;
    const row = this.#row;
    for (const [room, batch] of batches) {
      const n = batch.lines.length;
      if (n === 0) continue;
      const frame = n === 1 ? batch.lines[0]! : batch.lines.join("\n");
      const privates = batch.privates;
      for (const peer of room) {
        if (privates?.has(peer)) continue;
        if (this.#send(peer, frame, batch.bytes)) row[C.delivered]! += n;
      }
    }
    for (const [peer, lines] of own) {
      const n = lines.lines.length;
      if (n === 0) continue;
      const frame = n === 1 ? lines.lines[0]! : lines.lines.join("\n");
      if (this.#send(peer, frame, lines.bytes)) row[C.delivered]! += n;
    }
    batches.clear();
    own.clear();
    this.#flushingBatches = batches;
    this.#flushingOwn = own;
  }

  /** Stop the timers; nothing queued is written. */
  dispose(): void {
    clearTimeout(this.#flushTimer);
    clearTimeout(this.#suspectTimer);
    this.#suspects.clear();
  }

  #batchOf(room: Set<Peer>): Batch {
    let batch = this.#batches.get(room);
    if (batch === undefined) {
      batch = { lines: [], bytes: 0, privates: undefined };
      this.#batches.set(room, batch);
    }
    return batch;
  }

  /** Give a peer a frame of its own until the next flush, starting with the room's batch. */
  #privatize(peer: Peer, batch: Batch, inherit: boolean): Lines {
    const own = inherit
      ? { lines: batch.lines.slice(), bytes: batch.bytes }
      : { lines: [], bytes: 0 };
    this.#own.set(peer, own);
    (batch.privates ??= new Set()).add(peer);
    this.#scheduleFlush();
    return own;
  }

  /**
   * Flush on a later turn of the event loop, not a microtask: messages from many sockets that
   * arrive together then share one frame per peer, which is what makes chat fan-out cheap.
   */
  #scheduleFlush(): void {
    this.#flushTimer ??= setTimeout(() => this.flush(), 0);
  }

  /** Write one frame; false when the peer was not open or had to be dropped. */
  #send(peer: Peer, data: string | ArrayBuffer, bytes: number): boolean {
    if (peer.readyState !== OPEN) return false;
    try {
      peer.send(data);
    } catch (err) {
      // A peer that cannot take a frame is gone for everyone: drop it, keep broadcasting.
      if (!(err instanceof DOMException)) throw err;
      this.#options.onBroken(peer);
      return false;
    }
    this.#row[C.bytesOut]! += bytes;
    const buffered = peer.bufferedAmount;
    const limit = this.#options.maxBufferedBytes;
    if (buffered > limit) {
      // One event-loop turn can queue more than the limit before Deno writes anything, even
      // for a fast reader, and a busy event loop may not let Deno write for a while: judge it
      // SLOW_CONSUMER_GRACE_MS later, unless the queue is already far too long.
      if (buffered > SLOW_CONSUMER_HARD_FACTOR * limit) this.#options.onSlow(peer);
      else this.#suspect(peer);
    }
    return true;
  }

  #suspect(peer: Peer): void {
    this.#suspects.add(peer);
    this.#suspectTimer ??= setTimeout(() => {
      this.#suspectTimer = undefined;
      const suspects = [...this.#suspects];
      this.#suspects.clear();
      for (const s of suspects) {
        if (s.bufferedAmount > this.#options.maxBufferedBytes) this.#options.onSlow(s);
      }
    }, SLOW_CONSUMER_GRACE_MS);
  }
}

function push(to: Lines, line: string, bytes: number): void {
  if (to.lines.length > 0) to.bytes++; // the "\n" separator
  to.bytes += bytes;
  to.lines.push(line);
}
