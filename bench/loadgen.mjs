/**
 * Load generator for `deno task bench`: WebSocket clients over raw TCP (`node:net` only, no npm
 * packages), cheap enough per frame that the server under test stays the bottleneck, and
 * server-sent-events members by `node:http` (`sse`).
 *
 *   node bench/loadgen.mjs '<json config>'
 *
 * - The upgrade is written and checked by hand (status 101, Sec-WebSocket-Accept, subprotocol).
 * - Client frames are masked with a fresh random key, as RFC 6455 requires.
 * - Incoming frames are counted from their headers only; payloads are read only on the few
 *   "sampled" connections (sequence numbers and send timestamps live in the payload), on the
 *   publisher, and for control frames (ping → pong, close → close). In `chorus.v1` mode a frame
 *   may carry several events joined by "\n": a counting connection counts 1 + its "\n" bytes as
 *   events, and tells `message` events from presence by one byte each (see TYPE_AT).
 * - Every socket of the process reads into one shared buffer (`onread`), so a read costs no
 *   allocation and an idle connection costs the loadgen almost no memory.
 * - With `sse`, subscribers are `chorus.v1` members over server-sent events instead, opened
 *   with `node:http` (the response streamed, its `data:` lines parsed; see feedSse), and the
 *   publisher stays a WebSocket.
 * - Fan-out keeps at most `window` messages in flight: a message is acknowledged once both the
 *   publisher (it is in the room, so it hears its own messages) and the first sampled
 *   subscriber have received it.
 * - A connection is "ready" once it is open (raw) or has its `welcome` (chorus.v1, found by the
 *   same type byte, so a counting connection never parses a welcome, however big); `ready`
 *   waits for every connection to be, and `storm` drops every connection at once, opens a new
 *   one for each at once (one that fails tries again after a backoff) and times each until it
 *   is ready.
 *
 * The parent (bench/run.ts) drives it with one JSON command per line on stdin and reads one
 * JSON answer per line on stdout: connect, ready, settle, start, rate, mark, stall, resume,
 * stop, report, storm, quit.
 * It exits when stdin closes, so it never outlives the bench.
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import process from "node:process";
import readline from "node:readline";

/**
 * @typedef {object} Config
 * @property {string} host server address (loopback)
 * @property {number} port server port
 * @property {string} path room (URL path)
 * @property {number} roomSize when above 0, connection i joins `${path}-${floor(i / roomSize)}`
 * @property {boolean} chat offer the `chorus.v1` subprotocol
 * @property {boolean} [sse] subscribers (counting and sampled) are `chorus.v1` members over
 *   server-sent events (`GET` with `Accept: text/event-stream`, by `node:http`); the publisher
 *   stays a WebSocket. Needs `chat`.
 * @property {string} [localAddress] loopback address to connect from (127.0.0.x)
 * @property {number} subs connections that only count what they receive
 * @property {number} sampled connections that parse and check every payload (join after `subs`)
 * @property {boolean} publisher one publishing connection, joining last
 * @property {number} size payload text bytes
 * @property {number} window most unacknowledged messages in flight
 * @property {boolean} stall the last sampled connection is the one `stall` pauses
 * @property {number} rate all-to-all: messages per second each connection sends (0: fan-out);
 *   with `roomSize` each connection talks to its own room only, and latency counts the other
 *   members' messages only (not a sender's own echo)
 * @property {number} concurrency upgrades in flight while connecting
 * @property {number} deadlineMs hard limit on this process' life
 */

/** @type {Config} */
const cfg = {
  host: "127.0.0.1",
  port: 0,
  path: "/",
  roomSize: 0,
  chat: false,
  sse: false,
  subs: 0,
  sampled: 0,
  publisher: false,
  size: 64,
  window: 32,
  stall: false,
  rate: 0,
  concurrency: 256,
  deadlineMs: 600_000,
  ...JSON.parse(process.argv[2] ?? "{}"),
};

// Safety net: never outlive a bench that lost track of us.
setTimeout(() => process.exit(3), cfg.deadlineMs).unref();

const COUNT = 0; // counts frames (and events) from headers only
const SAMPLE = 1; // parses payloads: order, loss, latency
const PUB = 2; // the fan-out publisher; parses its own echoes as acknowledgements

const HANDSHAKE = 0;
const OPEN = 1;
const CLOSED = 2;

const NL = 10;
// A counting chorus.v1 connection tells a `message` event from presence events by one byte:
// every event is JSON.stringify'd with `type` first, so it starts `{"type":"` and byte 9 is
// the type's first letter; only "message" starts with "m", and only "welcome" with "w".
const TYPE_AT = 9;
const M = 0x6d;
const W = 0x77;

/** One client connection and its frame-parser state. */
class Conn {
  /**
   * @param {number} index position in this process, also the sender id in all-to-all mode
   * @param {number} kind COUNT, SAMPLE or PUB
   */
  constructor(index, kind) {
    this.index = index;
    this.kind = kind;
    /** @type {net.Socket | null} */
    this.sock = null;
    this.state = HANDSHAKE;
    /** @type {Buffer | null} bytes of the HTTP response so far */
    this.hs = null;
    this.key = "";
    /** @type {Buffer | null} a frame header split across reads */
    this.part = null;
    this.skip = 0; // payload bytes of the current frame still to come
    this.op = 0; // opcode of the current frame
    this.fin = false;
    this.msgOp = 0; // opcode of the message the current (continuation) frame belongs to
    this.keep = false; // whether the current frame's payload is kept
    /** @type {Buffer[]} kept payload pieces of the current message */
    this.parts = [];
    this.nl = 0; // "\n" bytes in the current message (counting chat connections)
    this.typeIn = -1; // payload bytes before the next event's type byte, or -1 (ditto)
    this.frames = 0; // data messages (frames) received
    this.events = 0; // chorus.v1 events received (= frames in raw mode)
    this.msgs = 0; // deliveries: chat `message` events, or raw messages
    this.closeCode = 0;
    this.gone = false; // closed or errored
    this.frameLen = 0; // payload bytes of the current frame
    this.gen = gen; // the generation it belongs to (see `storm`)
    this.readyAt = 0; // performance.now() when it became ready, or 0
    this.failed = false; // closed or failed before it was ready
    this.attempt = 0; // retries before this connection (storm)
    this.openAt = 0; // performance.now() when its TCP connect began
    this.tcpMs = -1; // how long the TCP connect took (-1: not connected)
    // SAMPLE / PUB
    this.got = 0; // payloads (messages) parsed
    this.lost = 0;
    this.disorder = 0;
    this.bad = 0; // unparseable payloads
    /** @type {Map<number, number>} next expected sequence number per sender */
    this.next = new Map();
    this.maxSeq = -1;
    this.offset = 0; // the highest chorus.v1 `offset` it has seen
    // server-sent events (see feedSse)
    this.lineOff = 0; // bytes of the current line seen so far
    this.lineKind = LINE_OTHER;
    this.named = false; // the current SSE message has an `event:` field (chorus' `close`)
    this.welcomeLine = false; // the current data line is a `welcome` (counting connections)
    // all-to-all sending
    this.sent = 0;
    this.nextSend = 0;
  }
}

/** @type {Conn[]} */
const conns = [];
const sampledConns = /** @type {Conn[]} */ ([]);
/** @type {Conn | null} */
let pub = null;
/** @type {Conn | null} the sampled subscriber whose receipt acknowledges a message */
let acker = null;
/** @type {Conn | null} */
let staller = null;

const errors = new Map(); // reason → count
function noteError(reason) {
  errors.set(reason, (errors.get(reason) ?? 0) + 1);
}

// ---------------------------------------------------------------- readiness
// `storm` replaces every connection with a new one: a new generation. Only the current
// generation's connections count here, so the old ones can close quietly meanwhile.
let gen = 0;
let readyN = 0; // connections of this generation that are ready
let failedN = 0; // connections of this generation that closed or failed before they were
let welcomeN = 0; // welcomes received by this generation, and their frames' payload bytes
let welcomeBytes = 0;
/** @type {(() => void) | null} called whenever readyN or failedN grows */
let readyWatch = null;
// During a storm a connection that fails before it is ready tries again, as the chorus page
// does (static/app.js): after 500 ms doubling to 30 s, each with jitter between 50 % and 100 %.
let retrying = false;
let retries = 0;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;

function markReady(c) {
  if (c.readyAt !== 0 || c.failed || c.gen !== gen) return;
  c.readyAt = performance.now();
  readyN++;
  readyWatch?.();
}

function markFailed(c) {
  if (c.readyAt !== 0 || c.failed || c.gen !== gen) return;
  c.failed = true;
  if (retrying) {
    retries++;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** c.attempt);
    setTimeout(() => retry(c), base * (0.5 + Math.random() * 0.5));
    return;
  }
  failedN++;
  readyWatch?.();
}

/** TCP connects of this generation's attempts so far that took 1 s or more. */
const slowTcpOf = new Set();
function slowTcp() {
  let n = slowTcpOf.size;
  for (const c of conns) if (c.tcpMs >= 1000 && !slowTcpOf.has(c)) n++;
  return n;
}

/** Replace a failed connection with a new attempt, in its place. */
function retry(c) {
  if (!retrying || c.gen !== gen) return;
  if (c.tcpMs >= 1000) slowTcpOf.add(c);
  const next = new Conn(c.index, c.kind);
  next.attempt = c.attempt + 1;
  conns[conns.indexOf(c)] = next;
  open(next);
}

function welcomed(c) {
  if (c.gen !== gen) return;
  welcomeN++;
  welcomeBytes += c.frameLen;
  markReady(c);
}

/**
 * Resolve once all `n` connections of this generation are ready or failed, or after
 * `timeoutMs`, with how many are ready and when the last of them became ready (ms after `t0`).
 */
function whenReady(n, t0, timeoutMs) {
  return new Promise((resolve) => {
    const finish = () => {
      readyWatch = null;
      clearTimeout(timer);
      let last = 0;
      for (const c of conns) if (c.readyAt !== 0) last = Math.max(last, c.readyAt - t0);
      resolve({ ready: readyN, failed: failedN, timedOut: readyN + failedN < n, last });
    };
    const timer = setTimeout(finish, timeoutMs);
    readyWatch = () => {
      if (readyN + failedN >= n) finish();
    };
    readyWatch();
  });
}

// ---------------------------------------------------------------- latency histogram
// Buckets 1 % wide on a log scale of microseconds: p50/p99 within 1 %, in bounded memory.
const HIST_BUCKETS = 2000;
const hist = new Uint32Array(HIST_BUCKETS);
let histCount = 0;
let histOn = false;
function resetLatency() {
  hist.fill(0);
  histCount = 0;
}
function recordLatency(ms) {
  const us = ms * 1000;
  const i = us <= 1 ? 0 : Math.min(HIST_BUCKETS - 1, Math.floor(Math.log(us) * 100));
  hist[i]++;
  histCount++;
}
function percentile(p) {
  if (histCount === 0) return null;
  const target = Math.ceil(histCount * p);
  let seen = 0;
  for (let i = 0; i < HIST_BUCKETS; i++) {
    seen += hist[i];
    if (seen >= target) return Math.exp((i + 0.5) / 100) / 1000; // ms
  }
  return null;
}

// ---------------------------------------------------------------- sending
function maskedFrame(opcode, payload) {
  const len = payload.length;
  const h = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(h + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) {
    out[1] = 0x80 | len;
  } else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  const mask = MASK;
  for (let k = 0; k < 4; k++) mask[k] = out[h + k] = (Math.random() * 256) | 0;
  const o = h + 4;
  for (let i = 0; i < len; i++) out[o + i] = payload[i] ^ mask[i & 3];
  return out;
}

const MASK = new Uint8Array(4);
const PAD = "x".repeat(65536);

/** The text of one message: "SENDER SEQ SENT_AT_MS " padded with "x" to `cfg.size` bytes. */
function messageText(sender, seq) {
  const head = `${sender} ${seq} ${performance.now().toFixed(3)} `;
  return head.length >= cfg.size ? head : head + PAD.slice(0, cfg.size - head.length);
}

function sendMessage(c, sender, seq) {
  const text = messageText(sender, seq);
  const body = cfg.chat ? `{"type":"message","text":"${text}"}` : text;
  c.sock.write(maskedFrame(0x1, Buffer.from(body)));
}

// ---------------------------------------------------------------- fan-out publisher
let pubRunning = false;
let pubSent = 0;
/** @type {(() => void) | null} */
let onDrained = null;

function acked() {
  const a = pub ? pub.maxSeq + 1 : pubSent;
  return acker ? Math.min(a, acker.maxSeq + 1) : a;
}

function pump() {
  if (!pub) return;
  if (pubRunning) {
    while (pubSent - acked() < cfg.window && !pub.gone) {
      sendMessage(pub, 0, pubSent++);
    }
  } else if (onDrained && acked() >= pubSent) {
    const done = onDrained;
    onDrained = null;
    done();
  }
}

// ---------------------------------------------------------------- all-to-all senders
let a2aTimer = /** @type {ReturnType<typeof setInterval> | null} */ (null);
function startAllToAll() {
  const period = 1000 / cfg.rate;
  const now = performance.now();
  for (const c of conns) c.nextSend = now + Math.random() * period;
  a2aTimer = setInterval(() => {
    const t = performance.now();
    for (const c of conns) {
      // Never send in a burst to catch up: a late tick skips ahead instead.
      if (c.gone || c.state !== OPEN || t < c.nextSend) continue;
      sendMessage(c, c.index, c.sent++);
      c.nextSend = Math.max(c.nextSend + period, t - period);
    }
  }, 5);
}

// ---------------------------------------------------------------- receiving
function onPayloadText(c, text) {
  const now = performance.now();
  const a = text.indexOf(" ");
  const b = text.indexOf(" ", a + 1);
  const e = text.indexOf(" ", b + 1);
  const sender = Number(text.slice(0, a));
  const seq = Number(text.slice(a + 1, b));
  const sentAt = Number(text.slice(b + 1, e === -1 ? undefined : e));
  if (a < 1 || b < 0 || !Number.isInteger(seq) || !Number.isFinite(sentAt)) {
    c.bad++;
    return;
  }
  const expected = c.next.get(sender) ?? 0;
  if (seq === expected) {
    c.next.set(sender, seq + 1);
  } else if (seq > expected) {
    c.lost += seq - expected;
    c.next.set(sender, seq + 1);
  } else {
    c.disorder++;
  }
  if (sender === 0 && seq > c.maxSeq) c.maxSeq = seq;
  c.got++;
  const own = cfg.roomSize > 0 && cfg.rate > 0 && sender === c.index;
  if (histOn && c.kind === SAMPLE && !own) recordLatency(now - sentAt);
}

/** Parse one kept data message; returns the number of events it carried. */
function onMessage(c, op, data) {
  if (!cfg.chat) c.msgs++;
  if (op !== 0x1) return 1; // binary frames: only counted
  const str = data.toString("utf8");
  if (!cfg.chat) {
    onPayloadText(c, str);
    return 1;
  }
  const lines = str.split("\n");
  for (const line of lines) {
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      c.bad++;
      continue;
    }
    if (ev.type === "message") {
      c.msgs++;
      if (typeof ev.offset === "number" && ev.offset > c.offset) c.offset = ev.offset;
      onPayloadText(c, ev.text);
    } else if (ev.type === "welcome") welcomed(c);
    else if (ev.type === "error") noteError(`error event ${ev.code}`);
  }
  return lines.length;
}

function onControl(c, op, data) {
  if (op === 0x9) {
    if (!c.gone) c.sock.write(maskedFrame(0xa, data)); // pong
  } else if (op === 0x8) {
    // Answer the closing handshake as a client must, then let the server end TCP.
    c.closeCode = data.length >= 2 ? data.readUInt16BE(0) : 1005;
    if (!c.gone) c.sock.end(maskedFrame(0x8, data.subarray(0, 2)));
  }
}

/** End of one frame: count a finished data message, hand kept payloads on. */
function endFrame(c) {
  const op = c.op;
  if (op >= 0x8) {
    const data = c.parts.length === 1 ? c.parts[0] : Buffer.concat(c.parts);
    c.parts = [];
    onControl(c, op, data);
    return;
  }
  if (!c.fin) return;
  c.frames++;
  if (c.kind === COUNT) {
    if (cfg.chat) {
      c.events += c.nl + 1;
      c.nl = 0;
    } else {
      c.events++;
      c.msgs++;
    }
  } else {
    const data = c.parts.length === 1 ? c.parts[0] : Buffer.concat(c.parts);
    c.parts = [];
    c.events += onMessage(c, c.msgOp, data);
    if (c === pub || c === acker) pump();
  }
}

/**
 * Parse a frame header at `buf[p..end)`. Returns the header length, or -1 when incomplete.
 * Sets c.op, c.fin and c.skip (the payload length).
 */
function header(c, buf, p, end) {
  const avail = end - p;
  if (avail < 2) return -1;
  const b0 = buf[p];
  const b1 = buf[p + 1];
  let len = b1 & 127;
  let h = 2;
  if (len === 126) {
    if (avail < 4) return -1;
    len = buf.readUInt16BE(p + 2);
    h = 4;
  } else if (len === 127) {
    if (avail < 10) return -1;
    len = buf.readUInt32BE(p + 2) * 2 ** 32 + buf.readUInt32BE(p + 6);
    h = 10;
  }
  if (b1 & 0x80) {
    noteError("server sent a masked frame");
    if (avail < h + 4) return -1;
    h += 4; // a client cannot unmask without the key handling; count it and skip
  }
  c.op = b0 & 0x0f;
  c.fin = (b0 & 0x80) !== 0;
  if (c.op !== 0 && c.op < 0x8) c.msgOp = c.op;
  c.skip = len;
  if (c.op < 0x8) c.frameLen = len;
  c.keep = c.op >= 0x8 || c.kind !== COUNT;
  if (c.op === 0x1 && cfg.chat && c.kind === COUNT) c.typeIn = TYPE_AT; // a message starts
  return h;
}

/** Feed received bytes `data[i..end)` to a connection. */
function feed(c, data, i, end) {
  if (c.state === HANDSHAKE) {
    i = handshake(c, data, i, end);
    if (i < 0) return;
  }
  // Position of the next "\n" at or after the current payload, for counting chat events.
  let nlPos = -2; // unknown yet
  const countChat = cfg.chat && c.kind === COUNT;
  while (i < end) {
    if (c.skip > 0) {
      const n = Math.min(c.skip, end - i);
      const to = i + n;
      if (c.keep) {
        c.parts.push(Buffer.from(data.subarray(i, to)));
      } else if (countChat && c.op < 0x8) {
        // Events start at the payload's start and after each "\n"; check each one's type byte,
        // which may lie in a later read.
        if (c.typeIn >= 0) {
          const at = i + c.typeIn;
          if (at < to) {
            if (data[at] === M) c.msgs++;
            else if (data[at] === W) welcomed(c);
            c.typeIn = -1;
          } else c.typeIn = at - to;
        }
        if (nlPos !== -1 && nlPos < i) nlPos = data.indexOf(NL, i);
        while (nlPos !== -1 && nlPos < to) {
          c.nl++;
          const at = nlPos + 1 + TYPE_AT;
          if (at < to) {
            if (data[at] === M) c.msgs++;
            else if (data[at] === W) welcomed(c);
          } else c.typeIn = at - to;
          nlPos = data.indexOf(NL, nlPos + 1);
        }
      }
      c.skip -= n;
      i = to;
      if (c.skip === 0) endFrame(c);
      continue;
    }
    let h;
    if (c.part !== null) {
      const more = data.subarray(i, Math.min(end, i + 14));
      const joined = Buffer.concat([c.part, more]);
      h = header(c, joined, 0, joined.length);
      if (h < 0) {
        c.part = joined;
        return;
      }
      i += h - c.part.length;
      c.part = null;
    } else {
      h = header(c, data, i, end);
      if (h < 0) {
        c.part = Buffer.from(data.subarray(i, end));
        return;
      }
      i += h;
    }
    if (c.skip === 0) endFrame(c);
  }
}

function acceptFor(key) {
  return createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64");
}

/** Consume HTTP response bytes; returns where frames start, or -1 while incomplete/failed. */
function handshake(c, data, i, end) {
  const chunk = Buffer.from(data.subarray(i, end));
  c.hs = c.hs === null ? chunk : Buffer.concat([c.hs, chunk]);
  const at = c.hs.indexOf("\r\n\r\n");
  if (at === -1) {
    if (c.hs.length > 16384) fail(c, "handshake: response headers too long");
    return -1;
  }
  const head = c.hs.subarray(0, at).toString("latin1");
  const rest = c.hs.subarray(at + 4);
  c.hs = null;
  const lines = head.split("\r\n");
  const status = lines[0].split(" ")[1];
  if (status !== "101") {
    fail(c, `handshake: HTTP ${status}`);
    return -1;
  }
  const headers = new Map();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    headers.set(
      line.slice(0, colon).trim().toLowerCase(),
      line.slice(colon + 1).trim(),
    );
  }
  if (headers.get("sec-websocket-accept") !== acceptFor(c.key)) {
    fail(c, "handshake: bad Sec-WebSocket-Accept");
    return -1;
  }
  if (cfg.chat && headers.get("sec-websocket-protocol") !== "chorus.v1") {
    fail(c, "handshake: chorus.v1 not accepted");
    return -1;
  }
  c.state = OPEN;
  if (!cfg.chat) markReady(c);
  connected(c, null);
  if (rest.length > 0) feed(c, rest, 0, rest.length);
  return end; // everything of this read was consumed above
}

// ---------------------------------------------------------------- server-sent events
// An SSE member gets each chorus.v1 event as one SSE message: a `data: <event JSON>` line and
// a blank line, a stored `message` preceded by `id: EPOCH:OFFSET`; `: ping` comments; and, when
// the server ends the stream, `event: close` with `data: {"code":N,"reason":"..."}`. Like its
// WebSocket twin a counting connection reads two bytes of a line only: its first (`d` for
// `data:`, `e` for `event:`) and, on a data line, the event type's first letter, TYPE_AT bytes
// into the JSON. Sampled connections keep their data lines and parse them (onMessage).
const LINE_OTHER = 0; // `id:`, a comment, or not known yet
const LINE_DATA = 1; // `data:` of a chorus.v1 event
const LINE_EVENT = 2; // `event:` (only the `close` event has one)
const LINE_NAMED = 3; // `data:` of a named event: `close`'s code and reason
const DATA_PREFIX = 6; // "data: "
const DATA_TYPE_AT = DATA_PREFIX + TYPE_AT;
const D = 0x64;
const E = 0x65;

/** Feed response-body bytes (chunked encoding already removed by node:http) to an SSE member. */
function feedSse(c, data) {
  const end = data.length;
  const keepData = c.kind !== COUNT;
  let p = 0;
  while (p < end) {
    const nl = data.indexOf(NL, p);
    const lineEnd = nl === -1 ? end : nl;
    if (c.lineOff === 0 && p < lineEnd) {
      const b = data[p];
      c.lineKind = b === D ? (c.named ? LINE_NAMED : LINE_DATA) : b === E ? LINE_EVENT : LINE_OTHER;
    }
    if (c.lineKind === LINE_DATA && !keepData) {
      const at = p + DATA_TYPE_AT - c.lineOff;
      if (at >= p && at < lineEnd) {
        if (data[at] === M) c.msgs++;
        else if (data[at] === W) c.welcomeLine = true;
      }
    } else if (c.lineKind !== LINE_OTHER) {
      c.parts.push(Buffer.from(data.subarray(p, lineEnd)));
    }
    c.lineOff += lineEnd - p;
    if (nl === -1) return;
    endSseLine(c);
    p = nl + 1;
  }
}

/** A line of an event stream has ended (its "\n" has come). */
function endSseLine(c) {
  const kind = c.lineKind;
  const length = c.lineOff;
  c.lineOff = 0;
  c.lineKind = LINE_OTHER;
  if (length === 0) { // a blank line ends an SSE message
    c.named = false;
    return;
  }
  if (kind === LINE_OTHER) return;
  const line = kind === LINE_DATA && c.kind === COUNT
    ? null
    : c.parts.length === 1
    ? c.parts[0]
    : Buffer.concat(c.parts);
  c.parts = [];
  if (kind === LINE_EVENT) {
    c.named = true;
    return;
  }
  if (kind === LINE_NAMED) {
    try {
      const { code } = JSON.parse(line.subarray(DATA_PREFIX).toString("utf8"));
      if (typeof code === "number") c.closeCode = code;
    } catch {
      c.bad++;
    }
    return;
  }
  c.frames++;
  c.frameLen = length - DATA_PREFIX;
  if (line === null) {
    c.events++;
    if (c.welcomeLine) {
      c.welcomeLine = false;
      welcomed(c);
    }
    return;
  }
  c.events += onMessage(c, 0x1, line.subarray(DATA_PREFIX));
  if (c === acker) pump();
}

const sseAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/** Open an event stream for `c`: `GET path` with `Accept: text/event-stream`, by node:http. */
function openSse(c, path) {
  const req = http.request({
    host: cfg.host,
    port: cfg.port,
    path,
    method: "GET",
    agent: sseAgent,
    headers: { accept: "text/event-stream" },
    ...(cfg.localAddress ? { localAddress: cfg.localAddress } : {}),
  });
  c.sock = req;
  req.on("socket", (sock) => {
    sock.setNoDelay(true);
    sock.once("connect", () => {
      c.tcpMs = performance.now() - c.openAt;
    });
  });
  req.on("response", (res) => {
    if (res.statusCode !== 200) {
      res.resume();
      fail(c, `sse: HTTP ${res.statusCode}`);
      return;
    }
    if (!String(res.headers["content-type"]).startsWith("text/event-stream")) {
      fail(c, `sse: content-type ${res.headers["content-type"]}`);
      return;
    }
    c.sock = res; // destroy, pause and resume act on the stream's socket
    c.state = OPEN;
    connected(c, null);
    res.on("data", (chunk) => feedSse(c, chunk));
    res.on("error", (err) => onSocketError(c, err));
  });
  req.on("error", (err) => onSocketError(c, err));
  req.on("close", () => onSocketClose(c));
  req.end();
}

// ---------------------------------------------------------------- connecting
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);
const ON_READ = !("Deno" in globalThis); // Deno's node:net compat: plain 'data' events

/** @type {((c: Conn, err: string | null) => void) | null} */
let connectedHook = null;
function connected(c, err) {
  if (connectedHook && c.attempt === 0) connectedHook(c, err); // retries are not openAll's
}

/** A connection that did not get through its upgrade; counted once, however it failed. */
function failHandshake(c, reason) {
  if (c.state !== HANDSHAKE) return;
  markFailed(c);
  noteError(reason);
  c.state = CLOSED;
  c.gone = true;
  connected(c, reason);
}

function fail(c, reason) {
  failHandshake(c, reason);
  c.sock?.destroy();
}

function open(c) {
  c.openAt = performance.now();
  const path = cfg.roomSize > 0 ? `${cfg.path}-${Math.floor(c.index / cfg.roomSize)}` : cfg.path;
  if (cfg.sse && c.kind !== PUB) return openSse(c, path);
  c.key = randomBytes(16).toString("base64");
  const options = {
    host: cfg.host,
    port: cfg.port,
    noDelay: true,
    ...(cfg.localAddress ? { localAddress: cfg.localAddress } : {}),
  };
  if (ON_READ) {
    options.onread = {
      buffer: READ_BUFFER,
      // In chorus.v1 mode feed() searches for "\n": bound it to this read's bytes.
      callback: cfg.chat
        ? (nread, buf) => feed(c, buf.subarray(0, nread), 0, nread)
        : (nread, buf) => feed(c, buf, 0, nread),
    };
  }
  const sock = net.connect(options);
  c.sock = sock;
  if (!ON_READ) sock.on("data", (d) => feed(c, d, 0, d.length));
  sock.on("connect", () => {
    c.tcpMs = performance.now() - c.openAt;
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${c.key}\r\nSec-WebSocket-Version: 13\r\n` +
        (cfg.chat ? "Sec-WebSocket-Protocol: chorus.v1\r\n" : "") + "\r\n",
    );
  });
  sock.on("error", (err) => onSocketError(c, err));
  sock.on("close", () => onSocketClose(c));
}

function onSocketError(c, err) {
  const reason = `socket: ${err.code ?? err.message}`;
  if (c.state === HANDSHAKE) failHandshake(c, reason);
  else if (!c.gone && c !== staller) noteError(reason);
  c.gone = true;
}

function onSocketClose(c) {
  markFailed(c);
  if (c.state === HANDSHAKE) failHandshake(c, "closed during handshake");
  else if (!quitting && !c.gone && c !== staller) {
    noteError(`closed by server (code ${c.closeCode || 1006})`);
  }
  c.state = CLOSED;
  c.gone = true;
}

/** Open `list` with at most `concurrency` upgrades in flight; resolve when all are done. */
function openAll(list, concurrency = cfg.concurrency) {
  return new Promise((resolve) => {
    let next = 0;
    let done = 0;
    let opened = 0;
    if (list.length === 0) return resolve({ opened: 0, failed: 0 });
    connectedHook = (_c, err) => {
      done++;
      if (err === null) opened++;
      if (next < list.length) open(list[next++]);
      if (done === list.length) {
        connectedHook = null;
        resolve({ opened, failed: done - opened });
      }
    };
    while (next < list.length && next < concurrency) open(list[next++]);
  });
}

// ---------------------------------------------------------------- commands
let quitting = false;
/** When `connect` (or the last `storm`) started, for `ready`. */
let connectT0 = 0;

/** What the subscribers (not the publisher) of this process received, and how many are open. */
function totals() {
  let frames = 0;
  let events = 0;
  let msgs = 0;
  let open = 0;
  let subs = 0;
  for (const c of conns) {
    if (c.kind === PUB) continue;
    subs++;
    frames += c.frames;
    events += c.events;
    msgs += c.msgs;
    if (!c.gone) open++;
  }
  return {
    subs,
    open,
    frames,
    events,
    msgs,
    ready: readyN,
    welcomes: welcomeN,
    welcomeBytes,
    stored: stored(),
  };
}

/**
 * Messages the server stored, as far as sampled `chorus.v1` members can tell: the sum over the
 * rooms of this process of the highest `offset` any member of the room has seen (a fresh store
 * numbers each room's messages 1, 2, 3, …). 0 without `roomSize` or sampled connections.
 */
function stored() {
  if (cfg.roomSize <= 0) return 0;
  const rooms = new Map();
  for (const c of sampledConns) {
    const room = Math.floor(c.index / cfg.roomSize);
    rooms.set(room, Math.max(rooms.get(room) ?? 0, c.offset));
  }
  let sum = 0;
  for (const v of rooms.values()) sum += v;
  return sum;
}

function lastFrameWatch() {
  let last = totals().events;
  let quietSince = performance.now();
  return () => {
    const now = performance.now();
    const t = totals().events;
    if (t !== last) {
      last = t;
      quietSince = now;
    }
    return now - quietSince;
  };
}

function sampleReport() {
  const out = [];
  for (const c of sampledConns) {
    out.push({
      got: c.got,
      lost: c.lost,
      disorder: c.disorder,
      bad: c.bad,
      closeCode: c.closeCode,
      gone: c.gone,
      stalled: c === staller,
      senders: c.next.size,
      received: cfg.rate > 0 ? undefined : c.next.get(0) ?? 0,
      missing: cfg.rate > 0 ? missingAllToAll(c) : undefined,
    });
  }
  return out;
}

/**
 * All-to-all: messages sent by this process' clients (of `c`'s room, with `roomSize`) that `c`
 * has not (yet) seen.
 */
function missingAllToAll(c) {
  let missing = 0;
  const room = cfg.roomSize > 0 ? Math.floor(c.index / cfg.roomSize) : -1;
  for (const s of conns) {
    if (room !== -1 && Math.floor(s.index / cfg.roomSize) !== room) continue;
    missing += Math.max(0, s.sent - (c.next.get(s.index) ?? 0));
  }
  return missing;
}

function cpu() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** @type {Record<string, (msg: any) => Promise<object> | object>} */
const commands = {
  async connect() {
    const t0 = performance.now();
    connectT0 = t0;
    for (let i = 0; i < cfg.subs; i++) {
      conns.push(new Conn(conns.length, COUNT));
    }
    for (let i = 0; i < cfg.sampled; i++) {
      const c = new Conn(conns.length, SAMPLE);
      conns.push(c);
      sampledConns.push(c);
    }
    // Senders are named in payloads: all-to-all clients by their index, the publisher as 0.
    acker = sampledConns[0] ?? null;
    if (cfg.stall && sampledConns.length >= 2) {
      staller = sampledConns[sampledConns.length - 1];
    }
    const first = await openAll(conns.filter((c) => c.kind !== PUB));
    let second = { opened: 0, failed: 0 };
    if (cfg.publisher) {
      pub = new Conn(conns.length, PUB);
      pub.index = 0;
      conns.push(pub);
      second = await openAll([pub]);
    }
    return {
      opened: first.opened + second.opened,
      failed: first.failed + second.failed,
      ms: performance.now() - t0,
    };
  },
  /**
   * Wait until every connection is ready (raw: open; chorus.v1: welcomed) or failed, for at
   * most `timeoutMs`. `lastMs`: when the last one became ready, after `connect` (or `storm`)
   * started.
   */
  async ready({ timeoutMs = 60_000 }) {
    const r = await whenReady(conns.length, connectT0, timeoutMs);
    return { ...r, lastMs: r.last, subs: conns.length };
  },
  /**
   * The reconnect storm: drop every connection at once (the socket is destroyed, as in a
   * network blip or a server restart: no closing handshake), then open a new one for each at
   * once, with at most `concurrency` upgrades in flight (default: all of them); one that fails
   * before it is ready tries again after a backoff (see `retry`). Resolves once every client
   * is ready, or after `timeoutMs`, with each one's time to ready in ms after the drop (null:
   * not ready) and the number of retries. Errors are counted afresh from the drop.
   */
  async storm({ concurrency = conns.length, timeoutMs = 180_000 }) {
    const t0 = performance.now();
    connectT0 = t0;
    gen++;
    readyN = failedN = 0;
    welcomeN = welcomeBytes = 0;
    retries = 0;
    slowTcpOf.clear();
    retrying = true;
    errors.clear(); // from here on, only the storm's
    for (const c of conns) {
      c.state = CLOSED; // closes quietly: no error counted, no handshake hook
      c.gone = true;
      c.sock?.destroy();
    }
    const fresh = conns.map((old) => new Conn(old.index, old.kind));

    conns.splice(0, conns.length, ...fresh);
    sampledConns.splice(0, sampledConns.length, ...fresh.filter((c) => c.kind === SAMPLE));
    acker = staller = pub = null;
    const done = whenReady(fresh.length, t0, timeoutMs);
    openAll(fresh, concurrency); // done once every first attempt is answered; `done` covers it
    const r = await done;
    retrying = false; // at the time limit: no more attempts
    return {
      ...r,
      ms: conns.map((c) => c.readyAt === 0 ? null : Math.round((c.readyAt - t0) * 10) / 10),
      // When this process had started every first attempt, and how many TCP connects (of
      // every attempt) took 1 s or more: the kernel resent their SYN, or this process was
      // too busy to notice sooner.
      issuedMs: Math.max(...fresh.map((c) => c.openAt)) - t0,
      slowTcp: slowTcp(),
      retries,
      errors: Object.fromEntries(errors),
    };
  },
  settle({ quietMs = 300, timeoutMs = 60_000 }) {
    const quiet = lastFrameWatch();
    const t0 = performance.now();
    return new Promise((resolve) => {
      const timer = setInterval(() => {
        const q = quiet();
        const waited = performance.now() - t0;
        if (q >= quietMs || waited >= timeoutMs) {
          clearInterval(timer);
          // busyMs: until the last frame arrived, i.e. without the quiet time itself.
          resolve({ quiet: q >= quietMs, ms: waited, busyMs: Math.max(0, waited - q) });
        }
      }, 50);
    });
  },
  start() {
    if (cfg.rate > 0) startAllToAll();
    else if (pub) {
      pubRunning = true;
      pump();
    }
    return {};
  },
  mark({ window, reset = false }) {
    if (window === "begin") {
      if (reset) resetLatency();
      histOn = true;
    }
    if (window === "end") histOn = false;
    const latency = { count: histCount, p50: percentile(0.5), p99: percentile(0.99) };
    let sent = 0;
    for (const c of conns) sent += c.sent;
    return { t: performance.now(), cpuUs: cpu(), sent, latency, ...totals() };
  },
  /** All-to-all: send `rate` messages per second per connection from now on. */
  rate({ rate }) {
    cfg.rate = rate;
    if (a2aTimer) {
      clearInterval(a2aTimer);
      startAllToAll();
    }
    return {};
  },
  stall() {
    staller?.sock.pause();
    return {};
  },
  resume() {
    staller?.sock.resume();
    return {};
  },
  async stop({ drainMs = 10_000 }) {
    // Stop sending, then wait until every message sent is acknowledged (fan-out) or seen by
    // every sampled connection (all-to-all), within drainMs.
    pubRunning = false;
    if (a2aTimer) clearInterval(a2aTimer);
    const t0 = performance.now();
    let drained;
    if (pub) {
      drained = await new Promise((resolve) => {
        const timer = setTimeout(() => {
          onDrained = null;
          resolve(false);
        }, drainMs);
        onDrained = () => {
          clearTimeout(timer);
          resolve(true);
        };
        pump();
      });
      // Sampled subscribers other than the acker may trail it by a frame or two.
      const deadline = performance.now() + 2000;
      while (
        performance.now() < deadline &&
        sampledConns.some((c) => c !== staller && !c.gone && (c.next.get(0) ?? 0) < pubSent)
      ) await sleep(20);
    } else {
      const deadline = performance.now() + drainMs;
      const pending = () => sampledConns.some((c) => !c.gone && missingAllToAll(c) > 0);
      while (pending() && performance.now() < deadline) await sleep(20);
      drained = !pending();
    }
    let sent = pubSent;
    if (cfg.rate > 0) {
      sent = 0;
      for (const c of conns) sent += c.sent;
    }
    return {
      drained,
      drainMs: performance.now() - t0,
      sent,
      samples: sampleReport(),
      latency: {
        count: histCount,
        p50: percentile(0.5),
        p99: percentile(0.99),
      },
      errors: Object.fromEntries(errors),
    };
  },
  report() {
    return { samples: sampleReport(), errors: Object.fromEntries(errors), ...totals() };
  },
  quit() {
    quitting = true;
    setImmediate(() => process.exit(0));
    return {};
  },
};

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

process.stdout.on("error", () => process.exit(0));
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  const handler = commands[msg.cmd];
  let answer;
  try {
    answer = handler ? await handler(msg) : { error: `unknown command ${msg.cmd}` };
  } catch (err) {
    answer = { error: String(err?.stack ?? err) };
  }
  process.stdout.write(JSON.stringify({ id: msg.id, ...answer }) + "\n");
});
rl.on("close", () => {
  quitting = true;
  process.exit(0);
});
