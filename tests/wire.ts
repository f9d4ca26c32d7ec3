/**
 * A WebSocket client written by hand on a bare TCP socket, for tests that must break the
 * protocol on purpose: frames are encoded byte by byte ({@link encodeFrame}, RFC 6455 §5.2),
 * the upgrade request is written by hand ({@link upgradeRequest}, {@link rawExchange}), and a
 * {@link RawWs} never answers anything on its own (no pong, no close reply), so a test controls
 * every byte the server sees. Every await here fails after `EVENT_TIMEOUT_MS` instead of
 * hanging. Every connection opened is tracked until closed, so {@link closeLeftoverRaw} can
 * clean up after a failed test.
 * @module
 */
import assert from "node:assert/strict";
import { Inbox, type TestServer, within } from "./helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Frames on the wire (RFC 6455 §5.2)
// ---------------------------------------------------------------------------------------------

/** Opcodes; 0x3–0x7 and 0xB–0xF are reserved. */
export const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

/** One frame to encode. Defaults: FIN set, no RSV bits, masked like a conforming client. */
export interface FrameSpec {
  opcode: number;
  payload?: Uint8Array | string;
  fin?: boolean;
  /** RSV1..RSV3 as a 3-bit number. */
  rsv?: number;
  mask?: boolean;
}

/** Encode one frame, with a 7-bit, 16-bit or 64-bit payload length as the size requires. */
export function encodeFrame({ opcode, payload = "", fin = true, rsv = 0, mask = true }: FrameSpec) {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  const n = body.length;
  const extra = n < 126 ? 0 : n <= 0xffff ? 2 : 8;
  const out = new Uint8Array(2 + extra + (mask ? 4 : 0) + n);
  const view = new DataView(out.buffer);
  out[0] = (fin ? 0x80 : 0) | ((rsv & 0x7) << 4) | (opcode & 0xf);
  out[1] = (mask ? 0x80 : 0) | (extra === 0 ? n : extra === 2 ? 126 : 127);
  if (extra === 2) view.setUint16(2, n);
  if (extra === 8) view.setBigUint64(2, BigInt(n));
  let at = 2 + extra;
  if (!mask) {
    out.set(body, at);
    return out;
  }
  const key = crypto.getRandomValues(new Uint8Array(4));
  out.set(key, at);
  at += 4;
  for (let i = 0; i < n; i++) out[at + i] = body[i]! ^ key[i & 3]!;
  return out;
}

/** A close frame's payload: a 2-byte code and a UTF-8 reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const r = encoder.encode(reason);
  const out = new Uint8Array(2 + r.length);
  new DataView(out.buffer).setUint16(0, code);
  out.set(r, 2);
  return out;
}

/** The bytes of `parts`, one after the other. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A frame the server sent. */
export interface WireFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Splits a server's byte stream into frames; a frame split across reads waits for the rest. */
export class FrameParser {
  #buf: Uint8Array = new Uint8Array(0);

  push(chunk: Uint8Array): WireFrame[] {
    this.#buf = this.#buf.length === 0 ? chunk.slice() : concat(this.#buf, chunk);
    const frames: WireFrame[] = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
      let len = b[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = view.getUint16(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(view.getBigUint64(2));
        at = 10;
      }
      const masked = (b[1]! & 0x80) !== 0;
      const key = masked ? b.subarray(at, at + 4) : undefined;
      if (masked) at += 4;
      if (b.length < at + len) break;
      const payload = b.slice(at, at + len);
      if (key) { for (let i = 0; i < len; i++) payload[i]! ^= key[i & 3]!; }
      frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0xf, payload });
      this.#buf = b.subarray(at + len);
    }
    return frames;
  }
}

// ---------------------------------------------------------------------------------------------
// Raw TCP clients
// ---------------------------------------------------------------------------------------------

/** How a raw connection ended: the server closed it (EOF), reset it, or we closed it. */
export type Ending = "eof" | "reset" | "local";

/** Write every byte, however the kernel splits it; false when the server already hung up. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  try {
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    return true;
  } catch (err) {
    if (
      err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset ||
      err instanceof Deno.errors.BadResource
    ) return false;
    throw err;
  }
}

/** Every raw connection a test opened, so the server's `close` can close leftovers. */
const openRaw = new Set<RawWs | Deno.Conn>();

/**
 * A WebSocket client on a bare TCP socket: it writes whatever bytes a test gives it and never
 * answers anything on its own (no pong, no close reply), so tests control every byte.
 */
export class RawWs {
  readonly frames = new Inbox<WireFrame>();
  /** The first close frame the server sent, if any. */
  closeFrame: { code: number; reason: string } | undefined;
  pings = 0;
  /** True once the server closed or reset the TCP connection. */
  ended = false;
  readonly #end = Promise.withResolvers<Ending>();
  readonly #close = Promise.withResolvers<{ code: number; reason: string }>();
  readonly #parser = new FrameParser();
  #reading = false;

  constructor(readonly conn: Deno.Conn, leftover: Uint8Array, read: boolean) {
    openRaw.add(this);
    this.#deliver(leftover);
    if (read) this.startReading();
  }

  /** Resolves when the connection ends, whoever ended it; fails after a timeout. */
  get end(): Promise<Ending> {
    return within(this.#end.promise, "the end of a raw connection");
  }

  /** Resolves with the server's close frame; fails after a timeout. */
  get closeFrameReceived(): Promise<{ code: number; reason: string }> {
    return within(this.#close.promise, "a close frame from the server");
  }

  /** Start reading (for a client that stalled on purpose until now). */
  startReading(): void {
    if (this.#reading) return;
    this.#reading = true;
    void this.#pump();
  }

  write(bytes: Uint8Array): Promise<boolean> {
    return writeAll(this.conn, bytes);
  }

  send(spec: FrameSpec): Promise<boolean> {
    return this.write(encodeFrame(spec));
  }

  /** Skip frames until a text frame satisfying `match` arrives. */
  async nextText(match: (text: string) => boolean, label: string): Promise<string> {
    for (;;) {
      const f = await this.frames.next(label);
      if (f.opcode === OP.text && match(decoder.decode(f.payload))) {
        return decoder.decode(f.payload);
      }
    }
  }

  /** Close our side of the TCP connection (no close frame) and wait for the reader to stop. */
  async close(): Promise<void> {
    openRaw.delete(this);
    try {
      this.conn.close();
    } catch (err) {
      if (!(err instanceof Deno.errors.BadResource)) throw err;
    }
    if (this.#reading) await this.#end.promise;
    else this.#end.resolve("local");
  }

  async #pump(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    let ending: Ending = "eof";
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.#deliver(buf.subarray(0, n));
      }
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionReset) ending = "reset";
      else if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
        ending = "local";
      } else throw err;
    }
    if (ending !== "local") this.ended = true;
    this.#end.resolve(ending);
  }

  #deliver(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    for (const f of this.#parser.push(chunk)) {
      if (f.opcode === OP.ping) this.pings++;
      if (f.opcode === OP.close && !this.closeFrame) {
        const view = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.byteLength);
        this.closeFrame = {
          code: f.payload.length >= 2 ? view.getUint16(0) : 1005,
          reason: decoder.decode(f.payload.subarray(2)),
        };
        this.#close.resolve(this.closeFrame);
      }
      this.frames.push(f);
    }
  }
}

/** What an HTTP exchange over raw TCP produced. */
export interface RawResponse {
  /** 0 when the server hung up before answering. */
  status: number;
  headers: Headers;
  body: string;
  /** The open WebSocket when the status is 101. */
  ws?: RawWs;
}

/** Read an HTTP response head; `rest` holds whatever followed it. */
async function readHead(
  conn: Deno.Conn,
): Promise<{ head: string; rest: Uint8Array } | { head: null; rest: Uint8Array }> {
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  for (;;) {
    for (let i = 3; i < buf.length; i++) {
      if (buf[i - 3] === 13 && buf[i - 2] === 10 && buf[i - 1] === 13 && buf[i] === 10) {
        return { head: decoder.decode(buf.subarray(0, i - 3)), rest: buf.subarray(i + 1) };
      }
    }
    let n: number | null;
    try {
      n = await conn.read(chunk);
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
      n = null;
    }
    if (n === null) return { head: null, rest: buf };
    buf = concat(buf, chunk.subarray(0, n));
  }
}

/** Send a hand-written HTTP request; keep the socket as a {@link RawWs} if it upgraded. */
export async function rawExchange(
  port: number,
  request: Uint8Array | string,
  { hostname = "127.0.0.1", read = true } = {},
): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname, port });
  openRaw.add(conn);
  await writeAll(conn, typeof request === "string" ? encoder.encode(request) : request);
  const { head, rest } = await within(readHead(conn), "the head of an HTTP response");
  const headers = new Headers();
  if (head === null) {
    openRaw.delete(conn);
    conn.close();
    return { status: 0, headers, body: "" };
  }
  const [statusLine, ...lines] = head.split("\r\n");
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const status = Number(statusLine!.split(" ")[1]);
  if (status === 101) {
    openRaw.delete(conn);
    return { status, headers, body: "", ws: new RawWs(conn, rest, read) };
  }
  const length = Number(headers.get("content-length") ?? 0);
  const readBody = async () => {
    let body = rest;
    const chunk = new Uint8Array(16 * 1024);
    while (body.length < length) {
      let n: number | null = null;
      try {
        n = await conn.read(chunk);
      } catch (err) {
        if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
      }
      if (n === null) break;
      body = concat(body, chunk.subarray(0, n));
    }
    return body;
  };
  const body = await within(readBody(), `a ${length}-byte HTTP response body`);
  openRaw.delete(conn);
  conn.close();
  return { status, headers, body: decoder.decode(body) };
}

/** The upgrade request of a browser-like client; `null` drops a header. */
export function upgradeRequest(
  port: number,
  {
    path = "/",
    method = "GET",
    host = `127.0.0.1:${port}`,
    headers = {},
  }: {
    path?: string;
    method?: string;
    host?: string;
    headers?: Record<string, string | null> | undefined;
  } = {},
): string {
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const all: Record<string, string | null> = {
    host,
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": key,
    "sec-websocket-version": "13",
    ...headers,
  };
  const lines = Object.entries(all).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  return `${method} ${path} HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n`;
}

/** Upgrade a raw TCP client into `path`; fails unless the server answers 101. */
export async function rawWs(
  server: TestServer,
  path: string,
  options: { read?: boolean; hostname?: string; headers?: Record<string, string | null> } = {},
): Promise<RawWs> {
  const res = await rawExchange(
    server.port,
    upgradeRequest(server.port, { path, headers: options.headers }),
    options,
  );
  assert.equal(res.status, 101, `upgrade of a raw TCP client: ${res.status} ${res.body}`);
  return res.ws!;
}

/** Close every raw connection a failed test left open. */
export async function closeLeftoverRaw(): Promise<void> {
  for (const c of [...openRaw]) {
    if (c instanceof RawWs) await c.close();
    else {
      openRaw.delete(c);
      try {
        c.close();
      } catch (err) {
        if (!(err instanceof Deno.errors.BadResource)) throw err;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Servers, counters and the steady traffic

/** Deterministic bytes (xorshift32), so a failure can be replayed. */
export function pseudoRandomBytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
