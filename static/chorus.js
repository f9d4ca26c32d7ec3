// @ts-check
/**
 * chorus.js: a client for chorus rooms (`chorus.v1`) with reconnect, resume and an SSE + POST
 * fallback. No dependencies; runs in browsers, Deno and Node 22+ (Node 20 with
 * `--experimental-websocket`, or with a `WebSocket` option). See `docs/client.md`.
 *
 * ```js
 * import { connect } from "https://chorus.example/chorus.js";
 * const room = connect("wss://chorus.example/lobby", { name: "Ada" });
 * room.on("message", (m) => console.log(m.from.name, m.text));
 * await room.send("hello");
 * ```
 * @module
 */

/** The WebSocket subprotocol chorus.js speaks. */
export const SUBPROTOCOL = "chorus.v1";

/** The longest `message.text` the server accepts, in UTF-16 code units. */
export const MAX_TEXT_LENGTH = 4096;

/** Defaults of every {@link ConnectOptions} timing and limit. */
export const DEFAULTS = Object.freeze({
  baseMs: 500,
  capMs: 30_000,
  laterMs: 5_000,
  stableMs: 10_000,
  connectTimeoutMs: 5_000,
  fallbackAfter: 2,
  websocketRetryMs: 5 * 60_000,
  sseIdleMs: 45_000,
  queueLimit: 100,
});

/**
 * WebSocket close codes after which the client stays closed; so does 4000–4099 (but see 4001),
 * which includes an operator's 4003 `disconnected by operator` and 4004 `room closed by operator`.
 */
const STOP_CODES = new Set([1000, 1002, 1003, 1007, 1009, 1010]);
/** Close codes after which the client reconnects, but not before `laterMs`. */
const LATER_CODES = new Set([1001, 1008, 1013]);
/** Close code of a connection that ended without a close frame or close event. */
const LOST = 1006;
/** How long `close()` waits for a WebSocket's close handshake before giving up on it. */
const CLOSE_WAIT_MS = 1_000;

/** @typedef {"websocket" | "sse"} Transport */
/** @typedef {"connecting" | "open" | "reconnecting" | "closed"} State */
/** @typedef {{ id: string, name: string }} Member */

/**
 * A chat message (`message` event).
 * @typedef {Object} Message
 * @property {"message"} type
 * @property {string} id server-assigned, unique
 * @property {Member} from
 * @property {string} text
 * @property {number} ts server time, ms since the Unix epoch
 * @property {number} [offset] its place in the room's stream; absent when it could not be stored
 */

/**
 * The first event of every connection.
 * @typedef {Object} Welcome
 * @property {"welcome"} type
 * @property {string} id this connection's member id
 * @property {string} name this connection's display name
 * @property {string} room
 * @property {number} count
 * @property {Member[]} members
 * @property {boolean} [partial] the room is over the server's presence limit
 * @property {string} epoch
 * @property {number} offset the room's latest offset
 * @property {number} after history and catch-up messages are every kept message after this
 * @property {Message[]} history
 * @property {boolean} recovered false: messages may be missing (see the `gap` event)
 * @property {string} [session] SSE only: the session that authorises POSTs
 */

/** @typedef {{ type: "join", id: string, name: string }} Join */
/** @typedef {{ type: "leave", id: string, name: string }} Leave */
/** @typedef {{ type: "rename", id: string, name: string, oldName: string }} Rename */
/** @typedef {{ type: "presence", count: number }} Presence */
/** @typedef {{ type: "members", count: number, members: Member[] }} Members */
/** @typedef {{ type: "error", code: string, message: string }} ServerError */

/**
 * Every `chorus.v1` server event.
 * @typedef {Welcome | Message | Join | Leave | Rename | Presence | Members | ServerError} ServerEvent
 */

/** @typedef {{ type: "message", text: string } | { type: "rename", name: string }} ClientEvent */

/**
 * An HTTP refusal of a connection: an SSE `GET` answered with an error, or (in Deno) a refused
 * WebSocket upgrade, whose error names only the status.
 * @typedef {Object} Refusal
 * @property {number} status
 * @property {string} code the error code of the JSON body, or `"refused"` when there is none
 * @property {string} message
 * @property {number} [retryAfterMs] from `Retry-After`
 */

/**
 * The `status` event: where the connection stands.
 * @typedef {Object} StatusEvent
 * @property {State} state
 * @property {Transport | null} transport the transport of this state's connection
 * @property {boolean} fallback true when SSE is used although WebSocket is allowed
 * @property {number} [delay] `reconnecting`: ms until the next attempt
 * @property {number} [code] `reconnecting`/`closed`: the close code of what ended (1006: lost)
 * @property {string} [reason] `reconnecting`/`closed`: the close reason, or what failed
 * @property {Refusal} [refusal] the HTTP refusal that ended the attempt, if it was one
 */

/**
 * The `gap` event: the server could not resume from where the client was (`recovered: false`),
 * so messages between `lastOffset` and `after` may be missing.
 * @typedef {Object} GapEvent
 * @property {string} epoch the epoch of the new welcome
 * @property {string | null} previousEpoch the epoch the client resumed in
 * @property {number | null} lastOffset the offset of the last message delivered before
 * @property {number} after delivery goes on with the messages after this offset
 * @property {boolean} epochChanged true when the room's stream started over
 */

/**
 * The `error` event: a server `error` event (`source: "server"`), a send that failed
 * (`"send"`), or a problem of the client itself such as an unparsable event (`"client"`).
 * @typedef {Object} ErrorDetail
 * @property {"server" | "send" | "client"} source
 * @property {string} code
 * @property {string} message
 * @property {number} [status] the HTTP status of a failed POST
 * @property {ClientEvent} [event] the event whose send failed
 */

/**
 * The events of a {@link Room} and what their listeners receive.
 * @typedef {Object} RoomEvents
 * @property {Welcome} welcome
 * @property {Message} message
 * @property {Join} join
 * @property {Leave} leave
 * @property {Rename} rename
 * @property {Presence} presence
 * @property {Members} members
 * @property {StatusEvent} status
 * @property {GapEvent} gap
 * @property {ErrorDetail} error
 */

/** @typedef {new (url: string, protocols?: string | string[]) => WebSocket} WebSocketClass */

/**
 * Options of {@link connect}. Timings are in milliseconds.
 * @typedef {Object} ConnectOptions
 * @property {string} [name] display name; after a rename the new one is used on reconnects
 * @property {string | (() => string | Promise<string>)} [token] a JWT, or a function called
 *   before every attempt (then a `4001 token expired` close or a 401 reconnects with a new one)
 * @property {Transport[]} [transports] allowed transports in order of preference
 * @property {{ epoch: string, offset: number }} [resume] start from this position
 * @property {number} [baseMs] backoff base (500)
 * @property {number} [capMs] backoff cap (30,000)
 * @property {number} [laterMs] least delay after 1001, 1008, 1013 and 429/503 refusals (5,000)
 * @property {number} [stableMs] a connection open this long resets the backoff (10,000)
 * @property {number} [connectTimeoutMs] no `welcome` within this: a failed attempt (5,000)
 * @property {number} [fallbackAfter] failed WebSocket attempts in a row before SSE (2)
 * @property {number} [websocketRetryMs] after a fallback, WebSocket is tried again on the first
 *   reconnect after this (300,000)
 * @property {number} [sseIdleMs] an SSE stream silent this long is dropped (45,000)
 * @property {number} [queueLimit] sends held while not connected (100)
 * @property {() => number} [random] `Math.random` unless given (tests)
 * @property {WebSocketClass} [WebSocket] the global `WebSocket` unless given
 * @property {typeof fetch} [fetch] the global `fetch` unless given
 */

/** An error of a send, a rename or the connection, with the server's error code. */
export class ChorusError extends Error {
  /**
   * @param {string} code a server error code (`rate_limited`…) or one of the client's:
   *   `closed`, `queue_full`, `not_connected`, `network`
   * @param {string} message
   * @param {number} [status] the HTTP status, for an SSE POST
   */
  constructor(code, message, status) {
    super(message);
    this.name = "ChorusError";
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} */
    this.status = status;
  }
}

/**
 * A backoff delay with full jitter: `floorMs + random() * min(capMs, max(floorMs, baseMs * 2 **
 * attempt))`. With `floorMs` 0 that is plain full jitter, `random(0, min(cap, base * 2^n))`; a
 * floor (after `1001 server shutting down`, or `Retry-After`) waits at least that long and
 * spreads the clients over as long again, so a restart does not bring them all back at once.
 * @param {number} attempt reconnects since the last stable connection, from 0
 * @param {{ baseMs: number, capMs: number }} backoff
 * @param {() => number} [random] a number in [0, 1)
 * @param {number} [floorMs] the least delay
 * @returns {number}
 */
export function retryDelay(attempt, backoff, random = Math.random, floorMs = 0) {
  const ceiling = Math.min(backoff.capMs, Math.max(floorMs, backoff.baseMs * 2 ** attempt));
  return floorMs + random() * ceiling;
}

/**
 * What to do after a connection closed with `code` (see the close codes in
 * `docs/protocol.md`): `"stop"`, `"later"` (reconnect, not before `laterMs`), `"retry"`
 * (backoff), or `"token"` (4001: reconnect only with a new token).
 * @param {number} code
 * @returns {"stop" | "later" | "retry" | "token"}
 */
export function closeAction(code) {
  if (code === 4001) return "token";
  if (STOP_CODES.has(code) || (code >= 4000 && code <= 4099)) return "stop";
  return LATER_CODES.has(code) ? "later" : "retry";
}

/**
 * What to do after an HTTP refusal with `status`: 401 is `"token"`, 429 and 503 are
 * `"later"` (with `Retry-After`), other 4xx are `"stop"` (the same request would be refused
 * again), anything else `"retry"`.
 * @param {number} status
 * @returns {"stop" | "later" | "retry" | "token"}
 */
export function refusalAction(status) {
  if (status === 401) return "token";
  if (status === 429 || status === 503) return "later";
  return status >= 400 && status < 500 ? "stop" : "retry";
}

/**
 * The events of one `chorus.v1` WebSocket frame: the server may put several into one frame,
 * one JSON object per line.
 * @param {string} frame
 * @returns {unknown[]}
 */
export function splitFrame(frame) {
  return frame.split("\n").filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
}

/** @typedef {{ event: string, data: string, id: string }} SseMessage */

/**
 * An incremental parser of `text/event-stream` (the WHATWG rules: CRLF, LF or CR line ends,
 * comments, `data` lines joined with "\n", `event`, `id`; `retry` is ignored because the
 * client does its own backoff).
 */
export class SseParser {
  #buffer = "";
  #data = "";
  #hasData = false;
  #event = "";
  #id = "";

  /**
   * Feed decoded text; returns the messages it completed.
   * @param {string} text
   * @returns {SseMessage[]}
   */
  push(text) {
    /** @type {SseMessage[]} */
    const out = [];
    const buf = this.#buffer + text;
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === buf.length) break; // maybe CRLF split across chunks
      const line = buf.slice(start, i);
      if (c === "\r" && buf[i + 1] === "\n") i++;
      start = i + 1;
      this.#line(line, out);
    }
    this.#buffer = buf.slice(start);
    return out;
  }

  /**
   * @param {string} line
   * @param {SseMessage[]} out
   */
  #line(line, out) {
    if (line === "") return this.#dispatch(out);
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.#data += this.#hasData ? `\n${value}` : value;
      this.#hasData = true;
    } else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
  }

  /** @param {SseMessage[]} out */
  #dispatch(out) {
    if (this.#hasData) {
      out.push({ event: this.#event || "message", data: this.#data, id: this.#id });
    }
    this.#data = "";
    this.#hasData = false;
    this.#event = "";
  }
}

/**
 * How one connection attempt ended.
 * @typedef {Object} LinkEnd
 * @property {number} code the close code (1006 when lost without one)
 * @property {string} reason
 * @property {Refusal} [refusal]
 */

/**
 * What a transport reports to its room. `end` is called once, and never after `close()`.
 * @typedef {Object} LinkHandlers
 * @property {(event: ServerEvent) => void} event
 * @property {(error: unknown) => void} bad an event that could not be parsed
 * @property {(end: LinkEnd) => void} end
 */

/**
 * One connection over one transport.
 * @typedef {Object} Link
 * @property {Transport} transport
 * @property {(event: ClientEvent) => Promise<void>} send resolves once the server accepted it
 *   (SSE) or once it was written to the open socket (WebSocket)
 * @property {() => Promise<void>} close ends the connection; resolves once it has ended
 */

/**
 * The text of an error, for status reasons.
 * @param {unknown} err
 * @returns {string}
 */
function errorText(err) {
  if (err instanceof Error) return err.message;
  if (typeof err === "object" && err !== null && "message" in err) return String(err.message);
  return String(err);
}

/**
 * The refusal a WebSocket error names, if any. Deno says "Invalid status code: 403"; browsers
 * say nothing, so there a refused upgrade is only a failed attempt.
 * @param {string} message
 * @returns {Refusal | undefined}
 */
function refusalInError(message) {
  const match = message.match(/status code:?\s*(\d{3})/i);
  if (!match) return undefined;
  return { status: Number(match[1]), code: "refused", message };
}

/**
 * Open a `chorus.v1` WebSocket.
 * @param {string} url
 * @param {WebSocketClass} WS
 * @param {LinkHandlers} handlers
 * @returns {Link}
 */
function openWebSocket(url, WS, handlers) {
  const ws = new WS(url, SUBPROTOCOL);
  let closing = false;
  let error = "";
  ws.onerror = (e) => {
    error = errorText(e);
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== "string") return handlers.bad(new Error("binary frame"));
    for (const line of e.data.split("\n")) {
      if (line.trim() === "") continue;
      try {
        handlers.event(/** @type {ServerEvent} */ (JSON.parse(line)));
      } catch (err) {
        handlers.bad(err);
      }
    }
  };
  /** @type {Promise<void>} */
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => {
      resolve();
      if (closing) return;
      const code = e.code === 0 || e.code === 1005 ? LOST : e.code;
      const refusal = refusalInError(error);
      /** @type {LinkEnd} */
      const end = { code, reason: e.reason || error || "connection lost" };
      handlers.end(refusal ? { ...end, refusal } : end);
    };
  });
  return {
    transport: "websocket",
    send(event) {
      if (ws.readyState !== 1) {
        return Promise.reject(new ChorusError("not_connected", "the socket is not open"));
      }
      ws.send(JSON.stringify(event));
      return Promise.resolve();
    },
    close() {
      closing = true;
      if (ws.readyState <= 1) ws.close(1000, "client closed");
      return waitAtMost(closed, CLOSE_WAIT_MS);
    },
  };
}

/**
 * `promise`, or nothing after `ms`; the timer is cleared either way.
 * @param {Promise<void>} promise
 * @param {number} ms
 * @returns {Promise<void>}
 */
async function waitAtMost(promise, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const late = new Promise((resolve) => timer = setTimeout(resolve, ms));
  try {
    await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The refusal an HTTP error response describes: its JSON error and `Retry-After`.
 * @param {Response} res
 * @returns {Promise<Refusal>}
 */
async function readRefusal(res) {
  const text = await res.text();
  let code = "refused";
  let message = `HTTP ${res.status}`;
  try {
    const body = JSON.parse(text);
    if (typeof body?.error?.code === "string") code = body.error.code;
    if (typeof body?.error?.message === "string") message = body.error.message;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    // Not JSON (a proxy's error page): the status alone describes the refusal.
  }
  /** @type {Refusal} */
  const refusal = { status: res.status, code, message };
  const seconds = Number(res.headers.get("retry-after") ?? NaN);
  return Number.isFinite(seconds) && seconds >= 0
    ? { ...refusal, retryAfterMs: seconds * 1000 }
    : refusal;
}

/**
 * The `close` event of an SSE stream: `{"code":N,"reason":"..."}`.
 * @param {string} data
 * @returns {LinkEnd}
 */
function parseCloseEvent(data) {
  const body = JSON.parse(data);
  const code = typeof body?.code === "number" ? body.code : LOST;
  return { code, reason: typeof body?.reason === "string" ? body.reason : "" };
}

/**
 * @typedef {Object} SseTarget
 * @property {string} streamUrl the GET URL, with name, token and position
 * @property {string} postUrl the room's URL, for POSTs
 * @property {string | null} lastEventId `EPOCH:OFFSET` to resume from
 * @property {number} idleMs
 * @property {typeof fetch} fetch
 */

/**
 * Open an SSE stream (`GET` with `Accept: text/event-stream`) and send by `POST` with the
 * welcome's session, one request at a time so the server hears sends in order.
 * @param {SseTarget} target
 * @param {LinkHandlers} handlers
 * @returns {Link}
 */
function openSse(target, handlers) {
  const abort = new AbortController();
  let closing = false;
  /** @type {string | null} */
  let session = null;
  /** @param {ServerEvent} event */
  const onEvent = (event) => {
    if (event.type === "welcome" && typeof event.session === "string") session = event.session;
    handlers.event(event);
  };
  const ended = readStream(target, abort, onEvent, handlers.bad).then((end) => {
    if (!closing) handlers.end(end);
  });
  /** @type {Promise<unknown>} */
  let chain = Promise.resolve();
  return {
    transport: "sse",
    send(event) {
      const sent = chain.then(() => post(target, session, event));
      // Only the order matters to the chain; each caller gets its own outcome from `sent`.
      chain = sent.then(() => undefined, () => undefined);
      return sent;
    },
    async close() {
      closing = true;
      abort.abort();
      await Promise.all([ended, chain]);
    },
  };
}

/**
 * Read an SSE stream to its end; every way it ends is returned, never thrown.
 * @param {SseTarget} target
 * @param {AbortController} abort
 * @param {(event: ServerEvent) => void} onEvent
 * @param {(error: unknown) => void} bad
 * @returns {Promise<LinkEnd>}
 */
async function readStream(target, abort, onEvent, bad) {
  /** @type {Record<string, string>} */
  const headers = { accept: "text/event-stream" };
  if (target.lastEventId !== null) headers["last-event-id"] = target.lastEventId;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let idle;
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => abort.abort(new Error("stream idle")), target.idleMs);
  };
  try {
    touch();
    const res = await target.fetch(target.streamUrl, { headers, signal: abort.signal });
    if (!res.ok) {
      return { code: LOST, reason: `HTTP ${res.status}`, refusal: await readRefusal(res) };
    }
    const type = res.headers.get("content-type") ?? "";
    if (!type.startsWith("text/event-stream") || !res.body) {
      await res.body?.cancel();
      return { code: LOST, reason: `not an event stream (${type || "no content type"})` };
    }
    return await readEvents(res.body, touch, onEvent, bad);
  } catch (err) {
    const reason = abort.signal.reason instanceof Error ? abort.signal.reason : err;
    return { code: LOST, reason: errorText(reason) };
  } finally {
    clearTimeout(idle);
  }
}

/**
 * Hand each event of an SSE body to `onEvent` until the body ends; a `close` event gives the
 * close code and reason.
 * @param {ReadableStream<Uint8Array>} body
 * @param {() => void} touch called on every chunk
 * @param {(event: ServerEvent) => void} onEvent
 * @param {(error: unknown) => void} bad
 * @returns {Promise<LinkEnd>}
 */
async function readEvents(body, touch, onEvent, bad) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  /** @type {LinkEnd} */
  let end = { code: LOST, reason: "stream ended" };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return end;
    touch();
    for (const m of parser.push(decoder.decode(value, { stream: true }))) {
      try {
        if (m.event === "close") end = parseCloseEvent(m.data);
        else if (m.event === "message") onEvent(/** @type {ServerEvent} */ (JSON.parse(m.data)));
      } catch (err) {
        bad(err);
      }
    }
  }
}

/**
 * POST one client event with the session; resolves on 202.
 * @param {SseTarget} target
 * @param {string | null} session
 * @param {ClientEvent} event
 * @returns {Promise<void>}
 */
async function post(target, session, event) {
  if (session === null) throw new ChorusError("not_connected", "no session yet");
  let res;
  try {
    res = await target.fetch(target.postUrl, {
      method: "POST",
      headers: { authorization: `Bearer ${session}`, "content-type": "application/json" },
      body: JSON.stringify(event),
    });
  } catch (err) {
    throw new ChorusError("network", `POST failed: ${errorText(err)}`);
  }
  if (res.status === 202) {
    await res.body?.cancel();
    return;
  }
  const refusal = await readRefusal(res);
  throw new ChorusError(refusal.code, refusal.message, res.status);
}

/**
 * @typedef {Object} Pending a send waiting for a connection
 * @property {ClientEvent} event
 * @property {() => void} resolve
 * @property {(err: ChorusError) => void} reject
 * @property {boolean} retried whether it was put back once after a 401 (an ended SSE session)
 */

/**
 * @template {keyof RoomEvents} K
 * @typedef {(event: RoomEvents[K]) => void} Listener
 */

/**
 * Report an error thrown by a listener like `EventTarget` does, without stopping the room.
 * @param {unknown} err
 */
function reportListenerError(err) {
  if (typeof globalThis.reportError === "function") return globalThis.reportError(err);
  setTimeout(() => {
    throw err;
  });
}

/**
 * A connection to one chorus room that stays connected: it reconnects with backoff, resumes
 * where it stopped, falls back to SSE + POST, and keeps the member list. Made by
 * {@link connect}.
 */
export class Room {
  /** @type {Map<string, Set<(event: never) => void>>} */
  #listeners = new Map();
  /** @type {Required<Omit<ConnectOptions, "name" | "token" | "resume" | "WebSocket" | "fetch">>} */
  #opts;
  /** @type {URL} */
  #url;
  /** @type {string | undefined} */
  #name;
  /** @type {ConnectOptions["token"]} */
  #token;
  /** @type {WebSocketClass | undefined} */
  #WebSocket;
  /** @type {typeof fetch | undefined} */
  #fetch;
  /** @type {Link | null} */
  #link = null;
  #welcomed = false;
  #welcomedAt = 0;
  /** @type {State} */
  #state = "connecting";
  /** Set by `close()`: nothing reconnects any more. */
  #closed = false;
  /** Whether an attempt is waiting for its token (it has no link yet). */
  #opening = false;
  #attempt = 0;
  #wsFailures = 0;
  /** Until when SSE is used instead of WebSocket after failed WebSocket attempts; 0: not. */
  #sseUntil = 0;
  /** Whether the last attempt ended with a 401 or 4001 (a new token gets one more try). */
  #authFailed = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #retryTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #openTimer;
  /** @type {Pending[]} */
  #queue = [];
  /** @type {string | null} */
  #epoch = null;
  /** @type {number | null} the offset of the last message delivered */
  #offset = null;
  /** @type {Map<string, Member>} */
  #members = new Map();
  /** @type {Map<string, number>} connections per member id (one user in two tabs) */
  #connections = new Map();
  #count = 0;
  #large = false;
  /** @type {Member | null} */
  #me = null;

  /**
   * Use {@link connect}.
   * @param {string | URL} url `ws:`, `wss:`, `http:` or `https:` URL of the room
   * @param {ConnectOptions} [options]
   */
  constructor(url, options = {}) {
    this.#url = new URL(url);
    if (!/^(wss?|https?):$/.test(this.#url.protocol)) {
      throw new TypeError(`chorus: ${this.#url.protocol} URLs are not supported`);
    }
    this.#name = options.name;
    this.#token = options.token;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.#opts = {
      ...DEFAULTS,
      transports: ["websocket", "sse"],
      random: Math.random,
      ...withoutUndefined(options),
    };
    if (options.resume) {
      this.#epoch = options.resume.epoch;
      this.#offset = options.resume.offset;
    }
    if (this.#pickable().length === 0) {
      throw new TypeError("chorus: none of the transports can run here (no WebSocket or fetch)");
    }
    queueMicrotask(() => this.#open());
  }

  /**
   * Listen to an event; returns a function that stops listening.
   * @template {keyof RoomEvents} K
   * @param {K} type
   * @param {Listener<K>} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Stop listening.
   * @template {keyof RoomEvents} K
   * @param {K} type
   * @param {Listener<K>} listener
   */
  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Send a chat message. Resolves once it was accepted: over SSE the server answered the POST
   * with 202; over WebSocket it was written to the open socket (the server reports a refusal
   * later as an `error` event). Sent while not connected, it waits in a bounded queue.
   * Rejects with a {@link ChorusError} (also reported as an `error` event).
   * @param {string} text
   * @returns {Promise<void>}
   */
  send(text) {
    if (typeof text !== "string") {
      return this.#refuse({ type: "message", text: String(text) }, "invalid_field", "not text");
    }
    if (text.length > MAX_TEXT_LENGTH) {
      const message = `text must be at most ${MAX_TEXT_LENGTH} characters`;
      return this.#refuse({ type: "message", text }, "text_too_long", message);
    }
    return this.#enqueue({ type: "message", text });
  }

  /**
   * Change this member's display name (also used on later reconnects once the server
   * confirms it with a `rename` event). Resolves and rejects like {@link Room.send}.
   * @param {string} name
   * @returns {Promise<void>}
   */
  rename(name) {
    return this.#enqueue({ type: "rename", name });
  }

  /**
   * Connect again now, resetting the backoff: after a stop (the `closed` state that a refusal
   * or close code caused), or to skip a pending delay. Does nothing after {@link Room.close}.
   */
  reconnect() {
    if (this.#closed || this.#link || this.#opening) return;
    clearTimeout(this.#retryTimer);
    this.#attempt = 0;
    this.#open();
  }

  /**
   * Close for good: the connection ends (WebSocket code 1000), queued sends reject with
   * `closed`, and the room never reconnects. Resolves once the connection has ended.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#openTimer);
    const link = this.#link;
    this.#link = null;
    this.#welcomed = false;
    this.#rejectQueue("closed", "the room was closed");
    this.#status({ state: "closed", code: 1000, reason: "closed by the client" }, link);
    await link?.close();
  }

  /** The connection's state. @returns {State} */
  get state() {
    return this.#state;
  }

  /** The transport of the current connection, or null between connections. */
  get transport() {
    return this.#link?.transport ?? null;
  }

  /**
   * The room's members by id, kept from `welcome`, `join`, `leave`, `rename` and `members`.
   * Empty while the room is large (see {@link Room.large}). Do not modify it.
   * @returns {ReadonlyMap<string, Member>}
   */
  get members() {
    return this.#members;
  }

  /** The room's member count (every worker and instance; raw clients included). */
  get count() {
    return this.#count;
  }

  /** Whether the room is over the server's presence limit: only its count is known. */
  get large() {
    return this.#large;
  }

  /** This connection's member id and name, from the last welcome; null before it. */
  get me() {
    return this.#me;
  }

  /**
   * Where the client stands: the epoch and the offset of the last message delivered (what a
   * reconnect resumes from). Null before the first welcome.
   * @returns {{ epoch: string, offset: number } | null}
   */
  get position() {
    return this.#epoch === null || this.#offset === null
      ? null
      : { epoch: this.#epoch, offset: this.#offset };
  }

  /**
   * @template {keyof RoomEvents} K
   * @param {K} type
   * @param {RoomEvents[K]} detail
   */
  #emit(type, detail) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        /** @type {Listener<K>} */ (listener)(detail);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  /**
   * @param {Omit<StatusEvent, "transport" | "fallback">} status
   * @param {Link | null} link the connection it is about
   * @param {Transport | null} [transport] when there is no link yet
   */
  #status(status, link, transport = link?.transport ?? null) {
    this.#state = status.state;
    const fallback = transport === "sse" && this.#opts.transports.includes("websocket");
    this.#emit("status", { ...status, transport, fallback });
  }

  /** The allowed transports that can run here. @returns {Transport[]} */
  #pickable() {
    return this.#opts.transports.filter((t) =>
      t === "websocket" ? typeof this.#WebSocket === "function" : typeof this.#fetch === "function"
    );
  }

  /** The transport of the next attempt. @returns {Transport} */
  #pickTransport() {
    const usable = this.#pickable();
    if (!usable.includes("sse")) return "websocket";
    if (!usable.includes("websocket")) return "sse";
    if (this.#sseUntil > Date.now()) return "sse";
    if (this.#sseUntil !== 0) {
      // Time to try WebSocket again; one more failure goes back to SSE.
      this.#sseUntil = 0;
      this.#wsFailures = this.#opts.fallbackAfter - 1;
    }
    return usable[0] ?? "websocket";
  }

  /** Start one connection attempt. */
  async #open() {
    if (this.#closed) return;
    const transport = this.#pickTransport();
    this.#status({ state: "connecting" }, null, transport);
    let token;
    this.#opening = true;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (err) {
      this.#emit("error", { source: "client", code: "token", message: errorText(err) });
      return this.#ended(null, transport, { code: LOST, reason: "no token" });
    } finally {
      this.#opening = false;
    }
    if (this.#closed) return;
    this.#attach(transport, token);
  }

  /**
   * Open the link of an attempt and watch it.
   * @param {Transport} transport
   * @param {string | undefined} token
   */
  #attach(transport, token) {
    /** @type {Link | null} */
    let link = null;
    /** @type {LinkHandlers} */
    const handlers = {
      event: (ev) => link === this.#link && this.#onEvent(ev),
      bad: (err) =>
        this.#emit("error", { source: "client", code: "bad_event", message: errorText(err) }),
      end: (end) => link === this.#link && this.#ended(link, transport, end),
    };
    try {
      link = transport === "websocket"
        ? openWebSocket(
          this.#target("ws", token),
          /** @type {WebSocketClass} */ (this.#WebSocket),
          handlers,
        )
        : openSse(this.#sseTarget(token), handlers);
    } catch (err) {
      return this.#ended(null, transport, { code: LOST, reason: errorText(err) });
    }
    this.#link = link;
    this.#openTimer = setTimeout(() => this.#timedOut(), this.#opts.connectTimeoutMs);
  }

  /** No welcome in time: give up on this attempt. */
  #timedOut() {
    const link = this.#link;
    if (!link || this.#welcomed) return;
    this.#link = null;
    this.#ended(link, link.transport, { code: LOST, reason: "no welcome in time" });
    link.close().catch((err) =>
      this.#emit("error", { source: "client", code: "close", message: errorText(err) })
    );
  }

  /**
   * The room's URL for a transport, with name, token and position.
   * @param {"ws" | "http"} scheme
   * @param {string | undefined} token
   * @returns {string}
   */
  #target(scheme, token) {
    const url = new URL(this.#url);
    const secure = url.protocol === "wss:" || url.protocol === "https:";
    url.protocol = `${scheme}${secure ? "s" : ""}:`;
    if (this.#name !== undefined) url.searchParams.set("name", this.#name);
    if (token !== undefined) url.searchParams.set("token", token);
    const position = this.position;
    if (position) {
      url.searchParams.set("offset", String(position.offset));
      url.searchParams.set("epoch", position.epoch);
    }
    return url.href;
  }

  /**
   * @param {string | undefined} token
   * @returns {SseTarget}
   */
  #sseTarget(token) {
    const position = this.position;
    const postUrl = new URL(this.#target("http", undefined));
    postUrl.search = "";
    return {
      streamUrl: this.#target("http", token),
      postUrl: postUrl.href,
      lastEventId: position ? `${position.epoch}:${position.offset}` : null,
      idleMs: this.#opts.sseIdleMs,
      fetch: /** @type {typeof fetch} */ (this.#fetch),
    };
  }

  /** @param {ServerEvent} ev */
  #onEvent(ev) {
    switch (ev.type) {
      case "welcome":
        return this.#onWelcome(ev);
      case "message":
        return this.#deliver(ev);
      case "join":
        return this.#onJoin(ev);
      case "leave":
        return this.#onLeave(ev);
      case "rename":
        return this.#onRename(ev);
      case "presence":
        return this.#onPresence(ev);
      case "members":
        this.#setMembers(ev.count, ev.members, false);
        return this.#emit("members", ev);
      case "error":
        return this.#emit("error", { source: "server", code: ev.code, message: ev.message });
    }
  }

  /** @param {Welcome} w */
  #onWelcome(w) {
    clearTimeout(this.#openTimer);
    const link = this.#link;
    this.#welcomed = true;
    this.#welcomedAt = Date.now();
    this.#authFailed = false;
    if (link?.transport === "websocket") this.#wsFailures = 0;
    this.#me = { id: w.id, name: w.name };
    this.#name = w.name;
    this.#setMembers(w.count, w.members, w.partial === true);
    const gap = this.#takePosition(w);
    this.#status({ state: "open" }, link);
    this.#emit("welcome", w);
    if (gap) this.#emit("gap", gap);
    for (const m of w.history ?? []) this.#deliver(m);
    this.#flush();
  }

  /**
   * Take the welcome's position: a new epoch starts over at `after`; the same epoch keeps the
   * last delivered offset (nothing at or before it is delivered again).
   * @param {Welcome} w
   * @returns {GapEvent | null} the gap, when the server could not resume
   */
  #takePosition(w) {
    const previousEpoch = this.#epoch;
    const lastOffset = this.#offset;
    if (typeof w.epoch !== "string") return null;
    if (w.epoch !== this.#epoch) {
      this.#epoch = w.epoch;
      this.#offset = w.after;
    } else this.#offset = Math.max(this.#offset ?? 0, w.after);
    if (w.recovered !== false) return null;
    const epochChanged = previousEpoch !== null && previousEpoch !== w.epoch;
    return { epoch: w.epoch, previousEpoch, lastOffset, after: w.after, epochChanged };
  }

  /**
   * Deliver a message unless it was delivered before (an offset at or before the last one).
   * @param {Message} m
   */
  #deliver(m) {
    if (typeof m.offset === "number") {
      if (this.#offset !== null && m.offset <= this.#offset) return;
      this.#offset = m.offset;
    }
    this.#emit("message", m);
  }

  /**
   * @param {number} count
   * @param {Member[]} members
   * @param {boolean} partial
   */
  #setMembers(count, members, partial) {
    this.#large = partial;
    this.#members = new Map();
    this.#connections = new Map();
    if (!partial) { for (const m of members) this.#add(m); }
    this.#count = Number.isFinite(count) ? count : members.length;
  }

  /** @param {Member} m */
  #add(m) {
    this.#members.set(m.id, { id: m.id, name: m.name });
    this.#connections.set(m.id, (this.#connections.get(m.id) ?? 0) + 1);
  }

  /** @param {Join} ev */
  #onJoin(ev) {
    if (!this.#large) {
      this.#add(ev);
      this.#count += 1;
    }
    this.#emit("join", ev);
  }

  /** @param {Leave} ev */
  #onLeave(ev) {
    if (!this.#large) {
      const left = (this.#connections.get(ev.id) ?? 1) - 1;
      if (left > 0) this.#connections.set(ev.id, left);
      else {
        this.#connections.delete(ev.id);
        this.#members.delete(ev.id);
      }
      this.#count = Math.max(0, this.#count - 1);
    }
    this.#emit("leave", ev);
  }

  /** @param {Rename} ev */
  #onRename(ev) {
    if (!this.#large && this.#members.has(ev.id)) {
      this.#members.set(ev.id, { id: ev.id, name: ev.name });
    }
    if (ev.id === this.#me?.id) {
      this.#me = { id: ev.id, name: ev.name };
      this.#name = ev.name;
    }
    this.#emit("rename", ev);
  }

  /** @param {Presence} ev */
  #onPresence(ev) {
    this.#large = true;
    this.#members = new Map();
    this.#connections = new Map();
    if (Number.isFinite(ev.count)) this.#count = ev.count;
    this.#emit("presence", ev);
  }

  /**
   * A connection attempt or connection ended: stop, or reconnect after a delay.
   * @param {Link | null} link
   * @param {Transport} transport
   * @param {LinkEnd} end
   */
  #ended(link, transport, end) {
    const welcomed = this.#welcomed;
    clearTimeout(this.#openTimer);
    if (link === this.#link) this.#link = null;
    this.#welcomed = false;
    if (this.#closed) return;
    if (welcomed && Date.now() - this.#welcomedAt >= this.#opts.stableMs) this.#attempt = 0;
    if (!welcomed) this.#attemptFailed(transport);
    const action = end.refusal ? refusalAction(end.refusal.status) : closeAction(end.code);
    const canRefresh = typeof this.#token === "function" && !this.#authFailed;
    this.#authFailed = action === "token";
    /** @type {Omit<StatusEvent, "transport" | "fallback" | "state">} */
    const why = {
      code: end.code,
      reason: end.reason,
      ...(end.refusal ? { refusal: end.refusal } : {}),
    };
    if (action === "stop" || (action === "token" && !canRefresh)) {
      this.#rejectQueue("closed", `connection ended: ${end.reason}`);
      return this.#status({ state: "closed", ...why }, link, transport);
    }
    const floor = action === "later"
      ? Math.max(this.#opts.laterMs, end.refusal?.retryAfterMs ?? 0)
      : 0;
    const delay = retryDelay(this.#attempt, this.#opts, this.#opts.random, floor);
    this.#attempt += 1;
    this.#status({ state: "reconnecting", delay, ...why }, link, transport);
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  /**
   * Count an attempt that never got its welcome. Enough failed WebSocket attempts in a row
   * switch to SSE; an SSE attempt that fails too ends the switch, since then the server is what
   * cannot be reached (or has no SSE), not the WebSocket.
   * @param {Transport} transport
   */
  #attemptFailed(transport) {
    if (transport === "sse") {
      this.#sseUntil = 0;
      this.#wsFailures = 0;
      return;
    }
    this.#wsFailures += 1;
    const sse = this.#pickable().includes("sse");
    if (sse && this.#wsFailures >= this.#opts.fallbackAfter) {
      this.#sseUntil = Date.now() + this.#opts.websocketRetryMs;
    }
  }

  /**
   * @param {ClientEvent} event
   * @returns {Promise<void>}
   */
  #enqueue(event) {
    if (this.#closed) return this.#refuse(event, "closed", "the room was closed");
    return new Promise((resolve, reject) => {
      this.#queue.push({ event, resolve, reject, retried: false });
      if (this.#queue.length > this.#opts.queueLimit) {
        this.#queue.pop();
        const message = `more than ${this.#opts.queueLimit} sends waiting for a connection`;
        reject(this.#failed(event, new ChorusError("queue_full", message)));
        return;
      }
      this.#flush();
    });
  }

  /** Send what waits, in order, if connected. */
  #flush() {
    const link = this.#link;
    if (!link || !this.#welcomed) return;
    for (const item of this.#queue.splice(0)) {
      link.send(item.event).then(item.resolve, (err) => this.#sendFailed(item, err));
    }
  }

  /**
   * A send failed: an ended SSE session (401) puts it back once, to go with the next
   * connection; anything else rejects it.
   * @param {Pending} item
   * @param {unknown} err
   */
  #sendFailed(item, err) {
    const error = err instanceof ChorusError ? err : new ChorusError("network", errorText(err));
    const again = error.status === 401 || error.code === "not_connected";
    if (again && !item.retried && !this.#closed) {
      item.retried = true;
      this.#queue.unshift(item);
      return this.#flush();
    }
    item.reject(this.#failed(item.event, error));
  }

  /**
   * Report a failed send as an `error` event and return the error.
   * @param {ClientEvent} event
   * @param {ChorusError} error
   * @returns {ChorusError}
   */
  #failed(event, error) {
    /** @type {ErrorDetail} */
    const detail = { source: "send", code: error.code, message: error.message, event };
    this.#emit("error", error.status === undefined ? detail : { ...detail, status: error.status });
    return error;
  }

  /**
   * A rejected promise for a send refused before queueing.
   * @param {ClientEvent} event
   * @param {string} code
   * @param {string} message
   * @returns {Promise<never>}
   */
  #refuse(event, code, message) {
    return Promise.reject(this.#failed(event, new ChorusError(code, message)));
  }

  /**
   * @param {string} code
   * @param {string} message
   */
  #rejectQueue(code, message) {
    for (const item of this.#queue.splice(0)) {
      item.reject(this.#failed(item.event, new ChorusError(code, message)));
    }
  }
}

/**
 * `options` without the keys whose value is undefined, so they do not override defaults.
 * @template {object} T
 * @param {T} options
 * @returns {Partial<T>}
 */
function withoutUndefined(options) {
  return /** @type {Partial<T>} */ (
    Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined))
  );
}

/**
 * Connect to a chorus room and stay connected. The returned {@link Room} starts connecting at
 * once (listeners added in the same turn see every event), reconnects with backoff, resumes
 * without duplicates, and falls back to SSE + POST where a WebSocket cannot get through.
 * @param {string | URL} url the room: `wss://host/lobby` (or `https://host/lobby`)
 * @param {ConnectOptions} [options]
 * @returns {Room}
 */
export function connect(url, options = {}) {
  return new Room(url, options);
}
