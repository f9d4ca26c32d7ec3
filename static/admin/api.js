// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The admin page's calls to the HTTP API (docs/api.md): every call carries the session's key as
 * a bearer token and is aborted with the session; a 401 rejects with {@link Unauthorized}, any
 * other failure with {@link ApiError}. {@link readEvents} reads a server-sent event stream from
 * a `fetch` response (EventSource cannot send a header).
 * @module
 */

/** Path prefix the server is mounted under, from the `chorus-base` meta tag; "" for none. */
const BASE = document.querySelector('meta[name="chorus-base"]')?.getAttribute("content") ?? "";

/** The signed-in session: its key, and an abort signal that ends everything it started. */
export const session = {
  key: "",
  /** @type {AbortController | null} */
  controller: null,
};

/** A 401 from the API: the key is wrong or was changed on the server. */
export class Unauthorized extends Error {}

/** Any other unsuccessful answer of the API, with its JSON error code when it has one. */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(`${message} (${status}${code ? ` ${code}` : ""})`);
    this.status = status;
    this.code = code;
  }
}

/**
 * Call the API with the session's key. Resolves with a successful response; rejects with
 * {@link Unauthorized} on 401 and {@link ApiError} on any other failure.
 * @param {string} path under the base path, e.g. `/api/admin/rooms`
 * @param {RequestInit} [init] @param {AbortSignal} [signal] defaults to the session's
 * @returns {Promise<Response>}
 */
export async function api(path, init = {}, signal = session.controller?.signal) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${session.key}`);
  const res = await fetch(`${BASE}${path}`, {
    ...init,
    headers,
    cache: "no-store",
    ...(signal ? { signal } : {}),
  });
  if (res.ok) return res;
  const body = await res.text();
  if (res.status === 401) throw new Unauthorized("401 unauthorized");
  let code = "";
  let message = body.trim() || res.statusText;
  try {
    const parsed = JSON.parse(body);
    code = String(parsed?.error?.code ?? "");
    message = String(parsed?.error?.message ?? message);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err; // not JSON: the body is the message
  }
  throw new ApiError(res.status, code, message);
}

/** {@link api}, answering the parsed JSON body. @param {Parameters<typeof api>} args */
export async function apiJson(...args) {
  return await (await api(...args)).json();
}

/** @param {string} room @returns {string} the room as a query parameter value */
export function q(room) {
  return encodeURIComponent(room);
}

/**
 * Parse a `text/event-stream` body, calling `onEvent(type, data)` for each event and `onData`
 * for every chunk (pings included).
 * @param {Response} res @param {(type: string, data: string) => void} onEvent
 * @param {() => void} onData
 */
export async function readEvents(res, onEvent, onData) {
  if (!res.body) throw new Error("the stream has no body");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onData();
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const val = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
      }
      if (data.length > 0) onEvent(type, data.join("\n"));
    }
  }
}

/** Wait `ms`, or less if `signal` aborts. @param {number} ms @param {AbortSignal} signal */
export function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(undefined);
    }, { once: true });
  });
}

/** @param {unknown} err @returns {boolean} whether `err` is the abort of a signal */
export function isAbort(err) {
  return err instanceof DOMException && err.name === "AbortError";
}

/** @param {unknown} err */
export function messageOf(err) {
  return err instanceof Error ? err.message : String(err);
}
