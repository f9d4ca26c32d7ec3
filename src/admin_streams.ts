/**
 * The open `GET /api/admin/stream` responses of one server: server-sent events written to
 * each, a bound on how many may be open at once, and their end at shutdown. What goes into
 * them is {@link ClusterStats}' business; when, `src/admin.ts`'.
 * @module
 */
import { SSE_PING } from "./sse_wire.ts";

/**
 * Admin streams one worker or instance serves at once; more are refused with 503. An
 * operator's page holds one; the bound keeps a leaked key or a reload loop from making the
 * server encode stats for thousands of readers every second.
 */
export const MAX_ADMIN_STREAMS = 16;

/**
 * Events a stream may have queued that its reader has not taken; one more ends the stream. At
 * one event a second that is a reader half a minute behind, which has stopped reading.
 */
export const MAX_QUEUED_EVENTS = 30;

const encoder = new TextEncoder();

/** The open admin streams. */
export class AdminStreams {
  readonly #max: number;
  readonly #open = new Set<ReadableStreamDefaultController<Uint8Array>>();
  #closed = false;

  /** `max`: see {@link MAX_ADMIN_STREAMS}. */
  constructor(max = MAX_ADMIN_STREAMS) {
    this.#max = max;
  }

  /** Streams open now. */
  get size(): number {
    return this.#open.size;
  }

  /**
   * A new stream's body, starting with `first` (an encoded event); null when {@link size} is
   * at the bound or the server is shutting down.
   */
  open(first: Uint8Array): ReadableStream<Uint8Array> | null {
    if (this.#closed || this.#open.size >= this.#max) return null;
    let self: ReadableStreamDefaultController<Uint8Array>;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        self = controller;
        this.#open.add(controller);
        controller.enqueue(first);
      },
      cancel: () => void this.#open.delete(self),
    }, new CountQueuingStrategy({ highWaterMark: 1 }));
  }

  /** Write one event, `event: NAME` with `data` as JSON, to every open stream. */
  send(name: string, data: unknown): void {
    if (this.#open.size === 0) return;
    this.#write(encodeEvent(name, data));
  }

  /** Write the keep-alive comment to every open stream. */
  ping(): void {
    this.#write(SSE_PING);
  }

  /** End every stream, and refuse new ones from now on. */
  close(): void {
    this.#closed = true;
    for (const controller of this.#open) controller.close();
    this.#open.clear();
  }

  #write(chunk: Uint8Array): void {
    for (const controller of [...this.#open]) {
      if ((controller.desiredSize ?? 0) <= 1 - MAX_QUEUED_EVENTS) {
        this.#open.delete(controller);
        controller.error(new Error("the admin stream's reader stopped reading"));
        continue;
      }
      controller.enqueue(chunk);
    }
  }
}

/** One server-sent event with a name and JSON data. */
export function encodeEvent(name: string, data: unknown): Uint8Array {
  return encoder.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}
