/**
 * The bytes of chorus' server-sent-events streams: one SSE message per `chorus.v1` event, the
 * `id: EPOCH:OFFSET` of a stored message, the keep-alive comment and the `close` event, and
 * the `Last-Event-ID` a reconnecting `EventSource` sends back. `docs/protocol.md` ("SSE +
 * HTTP") is the prose twin of this file.
 * @module
 */
import type { Resume } from "./tail.ts";

/** How often every stream gets a comment, so proxies keep it open and dead readers are found. */
export const SSE_PING_MS = 15_000;

/** `readyState` of a stream whose close event waits for its reader (as `WebSocket.CLOSING`). */
export const CLOSING_STATE = 2;

/** `readyState` of a stream that ended (as `WebSocket.CLOSED`). */
export const CLOSED_STATE = 3;

const encoder = new TextEncoder();

/** The keep-alive comment. */
export const SSE_PING: Uint8Array = encoder.encode(": ping\n\n");

/** A frame as SSE messages: one chunk per event, and their bytes. */
export interface Encoded {
  readonly chunks: Uint8Array[];
  readonly bytes: number;
}

/** The start of every `message` event as the hub serialises it. */
const MESSAGE_PREFIX = '{"type":"message",';
const WELCOME_PREFIX = '{"type":"welcome",';
/** How a stored message ends as the hub serialises it: its offset is its last field. */
const OFFSET_KEY = ',"offset":';

/**
 * Encodes frames for the streams of one adapter. The outbox writes one frame to every member
 * of a room, so the last frame encoded is kept: a room's fan-out to many streams encodes once.
 */
export class SseEncoder {
  #frame: string | undefined;
  #epoch: string | undefined;
  #encoded: Encoded = { chunks: [], bytes: 0 };

  /** A frame of newline-joined events as SSE messages; message ids carry `epoch`. */
  encode(frame: string, epoch: string | undefined): Encoded {
    if (frame === this.#frame && epoch === this.#epoch) return this.#encoded;
    const chunks: Uint8Array[] = [];
    let bytes = 0;
    // JSON.stringify escapes newlines inside strings: every "\n" separates two events.
    for (const line of frame.split("\n")) {
      const offset = line.startsWith(MESSAGE_PREFIX) ? offsetOf(line) : undefined;
      const id = offset === undefined || epoch === undefined ? "" : `id: ${epoch}:${offset}\n`;
      const chunk = encoder.encode(`${id}data: ${line}\n\n`);
      chunks.push(chunk);
      bytes += chunk.byteLength;
    }
    this.#frame = frame;
    this.#epoch = epoch;
    this.#encoded = { chunks, bytes };
    return this.#encoded;
  }
}

/**
 * The offset of a `message` event line, read off its end without parsing it when the offset
 * is its last field (how the hub writes it), parsed otherwise; undefined for a message that
 * was not stored. A text cannot fake the key: inside a JSON string every `"` is escaped.
 */
function offsetOf(line: string): number | undefined {
  const at = line.lastIndexOf(OFFSET_KEY);
  if (at !== -1 && line.endsWith("}")) {
    const digits = line.slice(at + OFFSET_KEY.length, -1);
    if (/^\d+$/.test(digits)) return Number(digits);
  }
  const offset = (JSON.parse(line) as { offset?: unknown }).offset;
  return typeof offset === "number" ? offset : undefined;
}

/**
 * The room's epoch from a frame that starts with a `welcome` (one per stream, parsed once);
 * undefined for any other frame.
 */
export function epochOfWelcome(frame: string): string | undefined {
  if (!frame.startsWith(WELCOME_PREFIX)) return undefined;
  const end = frame.indexOf("\n");
  const welcome = JSON.parse(end === -1 ? frame : frame.slice(0, end)) as { epoch?: unknown };
  return typeof welcome.epoch === "string" ? welcome.epoch : undefined;
}

/** The `close` event a stream the server ends gets last: the code and reason of `src/close.ts`. */
export function sseClose(code: number, reason: string): Uint8Array {
  return encoder.encode(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
}

/** Longest `Last-Event-ID` looked at; chorus' own are an epoch, a colon and an offset. */
const MAX_LAST_EVENT_ID = 96;

/**
 * Where a reconnecting `EventSource` resumes: its `Last-Event-ID` (`EPOCH:OFFSET`, the id of
 * the last message it got). Undefined when absent or malformed: a bad header is ignored, not
 * refused, so a stream falls back to its `?offset=&epoch=`.
 */
export function lastEventId(header: string | null): Resume | undefined {
  if (header === null || header.length > MAX_LAST_EVENT_ID) return undefined;
  const colon = header.lastIndexOf(":");
  if (colon <= 0) return undefined;
  const epoch = header.slice(0, colon);
  const digits = header.slice(colon + 1);
  if (!/^\d+$/.test(digits)) return undefined;
  const offset = Number(digits);
  return Number.isSafeInteger(offset) ? { epoch, offset } : undefined;
}
