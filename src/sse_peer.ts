/**
 * A hub {@link Peer} over a server-sent-events response body. The outbox hands a peer
 * newline-joined `chorus.v1` events; this peer writes each as one SSE message (`data:` line,
 * and `id: EPOCH:OFFSET` before a stored `message`), and nothing waits for a buffer to fill:
 * whenever the HTTP layer asks, it gets everything pending, joined into one chunk. The peer keeps
 * its own queue, so {@link SsePeer.bufferedAmount} is exactly what a reader has not taken yet: a
 * stalled reader grows it, and the outbox closes it as a slow consumer like a stalled socket.
 * @module
 */
import { CLOSED_STATE, CLOSING_STATE } from "./sse_wire.ts";
import { OPEN, type Peer } from "./transport.ts";
import { type Encoded, epochOfWelcome, SSE_PING, sseClose, type SseEncoder } from "./sse_wire.ts";

/**
 * How long a closed stream's last bytes (the close event) may wait for a reader that does not
 * read before the response is aborted, so a stalled reader cannot hold its connection forever.
 */
export const CLOSE_DRAIN_MS = 5_000;

/** Most bytes handed to the HTTP layer in one chunk, so a backlog goes out in bounded writes. */
export const MAX_PULL_BYTES = 64 * 1024;

/** One event-stream connection, from the hub's side. */
export class SsePeer implements Peer {
  /** `OPEN`, then `CLOSING` while the close event waits for the reader, then `CLOSED`. */
  readyState: number = OPEN;
  /** The response body to answer the `GET` with. */
  readonly body: ReadableStream<Uint8Array>;
  readonly #encoder: SseEncoder;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  /** Chunks not yet handed to the HTTP layer, from {@link #head} on. */
  #pending: Uint8Array[] = [];
  #head = 0;
  #bytes = 0;
  /** The HTTP layer asked for a chunk while none was pending: hand over the next at once. */
  #wanting = false;
  /** The room's epoch, from this stream's `welcome`; message ids are `EPOCH:OFFSET`. */
  #epoch: string | undefined;
  #listeners: (() => void)[] = [];
  #drainTimer: ReturnType<typeof setTimeout> | undefined;

  /** `encoder` is shared by the peers of one adapter, so a room frame is encoded once. */
  constructor(encoder: SseEncoder) {
    this.#encoder = encoder;
    // highWaterMark 0: the stream itself queues nothing; pull is called when a read waits.
    this.body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#pull(),
      cancel: () => this.#finish(),
    }, { highWaterMark: 0 });
  }

  /** Bytes queued for this stream that the HTTP layer has not taken yet. */
  get bufferedAmount(): number {
    return this.#bytes;
  }

  /** Queue a frame of newline-joined `chorus.v1` events, one SSE message each. */
  send(data: string | ArrayBuffer): void {
    if (this.readyState !== OPEN) {
      throw new DOMException("the stream is closed", "InvalidStateError");
    }
    if (typeof data !== "string") {
      throw new DOMException("an event stream carries text events only", "NotSupportedError");
    }
    if (this.#epoch === undefined) this.#epoch = epochOfWelcome(data);
    this.#push(this.#encoder.encode(data, this.#epoch));
  }

  /** Queue a comment that keeps proxies from timing the stream out and finds dead readers. */
  ping(): void {
    if (this.readyState === OPEN) this.#push({ chunks: [SSE_PING], bytes: SSE_PING.byteLength });
  }

  /**
   * End the stream on the server's initiative: what is still queued is dropped (a slow
   * consumer's backlog, say), the `close` event with `code` and `reason` goes out, then the
   * body ends. Close listeners hear of it once the reader took the close event, or after
   * {@link CLOSE_DRAIN_MS} when it does not read.
   */
  close(code = 1000, reason = ""): void {
    if (this.readyState !== OPEN) return;
    this.readyState = CLOSING_STATE;
    this.#pending = [];
    this.#head = 0;
    this.#bytes = 0;
    const event = sseClose(code, reason);
    this.#pending.push(event);
    this.#bytes = event.byteLength;
    if (this.#wanting) this.#pull();
    this.#drainTimer ??= setTimeout(() => {
      this.#drainTimer = undefined;
      this.#controller.error(new Error("the event stream's reader stopped reading"));
      this.#finish();
    }, CLOSE_DRAIN_MS);
  }

  /** Told once when the stream has ended, whichever side ended it. */
  addEventListener(_type: "close", listener: () => void): void {
    if (this.readyState === CLOSED_STATE) queueMicrotask(listener);
    else this.#listeners.push(listener);
  }

  #push(encoded: Encoded): void {
    for (const chunk of encoded.chunks) this.#pending.push(chunk);
    this.#bytes += encoded.bytes;
    if (this.#wanting) this.#pull();
  }

  /**
   * Hand the HTTP layer what is pending, as one chunk of up to {@link MAX_PULL_BYTES} (the
   * events of a flush arrive together: one chunk for them all costs the stream machinery once,
   * not once per event); end the body once a closing stream has none left.
   */
  #pull(): void {
    if (this.readyState === CLOSED_STATE) return;
    if (this.#head < this.#pending.length) {
      this.#wanting = false;
      const chunk = this.#take();
      if (this.#head === this.#pending.length) {
        this.#pending = [];
        this.#head = 0;
      }
      this.#controller.enqueue(chunk);
      return;
    }
    if (this.readyState === CLOSING_STATE) {
      this.#controller.close();
      this.#finish();
      return;
    }
    this.#wanting = true;
  }

  /** Take pending chunks from the head, joined, up to {@link MAX_PULL_BYTES} (at least one). */
  #take(): Uint8Array {
    const first = this.#pending[this.#head]!;
    let end = this.#head + 1;
    let size = first.byteLength;
    while (end < this.#pending.length && size + this.#pending[end]!.byteLength <= MAX_PULL_BYTES) {
      size += this.#pending[end++]!.byteLength;
    }
    let chunk = first;
    if (end > this.#head + 1) {
      chunk = new Uint8Array(size);
      let at = 0;
      for (let i = this.#head; i < end; i++) {
        chunk.set(this.#pending[i]!, at);
        at += this.#pending[i]!.byteLength;
      }
    }
    for (let i = this.#head; i < end; i++) this.#pending[i] = undefined!;
    this.#head = end;
    this.#bytes -= size;
    return chunk;
  }

  /** The stream ended (closed, cancelled by the client, or aborted): tell the listeners once. */
  #finish(): void {
    if (this.readyState === CLOSED_STATE) return;
    this.readyState = CLOSED_STATE;
    clearTimeout(this.#drainTimer);
    this.#drainTimer = undefined;
    this.#pending = [];
    this.#head = 0;
    this.#bytes = 0;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const listener of listeners) listener();
  }
}
