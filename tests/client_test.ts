/**
 * chorus.js, the client library (issue #14), against real servers: in-process servers, real
 * `main.ts` processes killed with SIGKILL and restarted on the same port, and a small SSE
 * endpoint in this file that follows the SSE wire contract (the server's own SSE transport is
 * tested against the library once both halves are merged). Nothing sleeps: every test awaits
 * events.
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import {
  closeAction,
  connect,
  refusalAction,
  retryDelay,
  type Room,
  SseParser,
} from "../static/chorus.js";
import {
  chatClient,
  type Event,
  Inbox,
  type MainProcess,
  ROOT,
  runToEnd,
  START_COMMAND,
  startMain,
  startServer,
  within,
} from "./helpers.ts";

/** Fast backoff for tests: the library's real delays, scaled down. */
const FAST = { baseMs: 20, capMs: 200, laterMs: 0 };

/** One event a room emitted. */
interface Seen {
  type: string;
  /** `performance.now()` when it was emitted. */
  at: number;
  // deno-lint-ignore no-explicit-any
  detail: any;
}

const TYPES = [
  "welcome",
  "message",
  "join",
  "leave",
  "rename",
  "presence",
  "members",
  "status",
  "gap",
  "error",
] as const;

/** Every event of a room, in order, awaitable. */
class Recorder {
  readonly log: Seen[] = [];
  readonly #inbox = new Inbox<Seen>();

  constructor(readonly room: Room) {
    for (const type of TYPES) {
      room.on(type, (detail: unknown) => {
        const seen = { type, detail, at: performance.now() };
        this.log.push(seen);
        this.#inbox.push(seen);
      });
    }
  }

  /** Skip events until one of `type` for which `pred` holds. */
  until(type: string, pred: (detail: Event) => boolean = () => true): Promise<Event> {
    const find = async () => {
      for (;;) {
        const seen = await this.#inbox.next(`a "${type}" event`);
        if (seen.type === type && pred(seen.detail)) return seen.detail;
      }
    };
    return within(find(), `a matching "${type}" event`);
  }

  /** The next status event in `state`. */
  status(state: string): Promise<Event> {
    return this.until("status", (s) => s.state === state);
  }

  /** Texts of the messages delivered so far. */
  texts(): string[] {
    return this.log.filter((s) => s.type === "message").map((s) => s.detail.text);
  }

  /** Offsets of the messages delivered so far. */
  offsets(): number[] {
    return this.log.filter((s) => s.type === "message").map((s) => s.detail.offset);
  }
}

/** Connect a room and record it. */
function record(url: string, options: Parameters<typeof connect>[1] = {}): Recorder {
  return new Recorder(connect(url, options));
}

// ---------------------------------------------------------------------------------------------
// Pure parts

Deno.test("retryDelay: full jitter between 0 and base·2^attempt, capped, above a floor", () => {
  const backoff = { baseMs: 500, capMs: 30_000 };
  assert.equal(retryDelay(0, backoff, () => 0), 0);
  assert.equal(retryDelay(0, backoff, () => 0.5), 250);
  assert.equal(retryDelay(3, backoff, () => 0.5), 2000);
  for (const attempt of [6, 7, 20, 1000]) {
    assert.equal(retryDelay(attempt, backoff, () => 0.999999), 30_000 * 0.999999, `${attempt}`);
  }
  // A floor (1001, Retry-After) waits at least that long and spreads over as long again.
  assert.equal(retryDelay(0, backoff, () => 0, 5000), 5000);
  assert.equal(retryDelay(0, backoff, () => 0.5, 5000), 7500);
  assert.equal(retryDelay(10, backoff, () => 0.5, 5000), 20_000);
  const delays = new Set(Array.from({ length: 50 }, () => retryDelay(4, backoff)));
  assert.ok(delays.size > 40, "Math.random spreads the delays");
  assert.ok([...delays].every((d) => d >= 0 && d < 8000));
});

Deno.test("closeAction and refusalAction follow the close codes table", () => {
  const actions = (codes: number[], f: (n: number) => string) => codes.map(f);
  assert.deepEqual(actions([1000, 1002, 1003, 1007, 1009, 1010, 4000, 4003], closeAction), [
    ..."stop ".repeat(8).trim().split(" "),
  ]);
  assert.deepEqual(actions([1001, 1008, 1013], closeAction), ["later", "later", "later"]);
  assert.deepEqual(actions([1006, 1011, 1012], closeAction), ["retry", "retry", "retry"]);
  assert.equal(closeAction(4001), "token");
  assert.deepEqual(actions([400, 401, 403, 404, 426, 429, 503, 500, 502], refusalAction), [
    "stop",
    "token",
    "stop",
    "stop",
    "stop",
    "later",
    "later",
    "retry",
    "retry",
  ]);
});

Deno.test("SseParser: CRLF split across chunks, multi-line data, comments, ids, named events", () => {
  const p = new SseParser();
  const out = [
    ...p.push(": ping\r"),
    ...p.push("\n\r\nid: e:1\r"),
    ...p.push('\ndata: {"a":\ndata:1}\n\n'),
    ...p.push('event: close\ndata: {"code":4001}\r\r'),
    ...p.push("data"),
    ...p.push(": x\n\n"),
  ];
  assert.deepEqual(out, [
    { event: "message", data: '{"a":\n1}', id: "e:1" },
    { event: "close", data: '{"code":4001}', id: "e:1" },
    { event: "message", data: "x", id: "e:1" },
  ]);
});

// ---------------------------------------------------------------------------------------------
// WebSocket, against real servers

Deno.test("a room connects, gets its welcome, keeps the member list and chats", async () => {
  const server = startServer();
  const ada = record(server.ws("/r"), { name: "Ada" });
  try {
    assert.deepEqual((await ada.status("connecting")).transport, "websocket");
    const welcome = await ada.until("welcome");
    assert.equal(welcome.name, "Ada");
    assert.equal(ada.room.state, "open");
    assert.equal(ada.room.transport, "websocket");
    assert.deepEqual(ada.room.me, { id: welcome.id, name: "Ada" });
    const { client: lin, welcome: linWelcome } = await chatClient(server.ws("/r?name=Lin"));
    await ada.until("join");
    assert.deepEqual([...ada.room.members.values()].map((m) => m.name).sort(), ["Ada", "Lin"]);
    assert.equal(ada.room.count, 2);
    lin.sendEvent({ type: "rename", name: "Lin B." });
    await ada.until("rename");
    assert.equal(ada.room.members.get(linWelcome.id)?.name, "Lin B.");
    await ada.room.send("hello");
    assert.equal((await ada.until("message")).text, "hello");
    assert.equal((await lin.until("message")).text, "hello");
    await ada.room.rename("Ada L.");
    await ada.until("rename", (r) => r.id === welcome.id);
    assert.equal(ada.room.me?.name, "Ada L.");
    await lin.close();
    await ada.until("leave");
    assert.deepEqual([...ada.room.members.keys()], [welcome.id]);
    assert.equal(ada.room.count, 1);
  } finally {
    await ada.room.close();
    await server.close();
  }
});

/**
 * A scripted `chorus.v1` WebSocket server on a free port: `script` gets each accepted socket.
 */
function scriptedServer(script: (ws: WebSocket) => void) {
  return Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "chorus.v1" });
    socket.onopen = () => script(socket);
    return response;
  });
}

/** A welcome of epoch `e1` at `offset`, with `history`. */
function welcomeAt(offset: number, history: Event[] = [], extra: Event = {}): Event {
  const after = offset - history.length;
  return {
    type: "welcome",
    id: "m1",
    name: "Ada",
    room: "/r",
    count: 1,
    members: [{ id: "m1", name: "Ada" }],
    epoch: "e1",
    offset,
    after,
    history,
    recovered: true,
    ...extra,
  };
}

/** A message of epoch `e1` with `offset`. */
function messageAt(offset: number, text = `m${offset}`): Event {
  return {
    type: "message",
    id: `x${offset}`,
    from: { id: "m0", name: "Lin" },
    text,
    ts: 0,
    offset,
  };
}

Deno.test("a frame with several events separated by newlines is split into each event", async () => {
  const frame = [welcomeAt(1, [messageAt(1)]), messageAt(2), { type: "presence", count: 5000 }]
    .map((e) => JSON.stringify(e)).join("\n");
  const server = scriptedServer((ws) => ws.send(frame));
  const ada = record(`ws://127.0.0.1:${server.addr.port}/r`);
  try {
    await ada.until("presence");
    assert.deepEqual(ada.log.filter((s) => s.type !== "status").map((s) => s.type), [
      "welcome",
      "message",
      "message",
      "presence",
    ]);
    assert.deepEqual(ada.texts(), ["m1", "m2"]);
    assert.equal(ada.room.large, true);
    assert.equal(ada.room.count, 5000);
    assert.equal(ada.room.members.size, 0);
  } finally {
    await ada.room.close();
    await server.shutdown();
  }
});

Deno.test("a resumed connection never delivers an offset twice, history included", async () => {
  // The second connection's server replays 2 and 3 (as a server after a power loss might).
  let connections = 0;
  const server = scriptedServer((ws) => {
    connections++;
    if (connections === 1) {
      ws.send(JSON.stringify(welcomeAt(2, [messageAt(1), messageAt(2)])));
      ws.close(1012, "restart");
    } else {
      ws.send(JSON.stringify(welcomeAt(3, [messageAt(2), messageAt(3)])));
      ws.send(`${JSON.stringify(messageAt(3))}\n${JSON.stringify(messageAt(4))}`);
    }
  });
  const ada = record(`ws://127.0.0.1:${server.addr.port}/r`, FAST);
  try {
    await ada.until("message", (m) => m.offset === 4);
    assert.deepEqual(ada.offsets(), [1, 2, 3, 4]);
    assert.deepEqual(ada.room.position, { epoch: "e1", offset: 4 });
  } finally {
    await ada.room.close();
    await server.shutdown();
  }
});

/**
 * `deno task start`'s command with read and write access to `dir` added (as in
 * durability_test.ts).
 */
function commandFor(dir: string): string[] {
  return START_COMMAND.map((a) =>
    a.startsWith("--allow-read=") || a.startsWith("--allow-write=") ? `${a},${dir}` : a
  );
}

/** Start `main.ts` on the SQLite store in `dir`, on `port` (0: any). */
function startSqlite(dir: string, port = 0): Promise<MainProcess> {
  const args = ["--store", "sqlite", "--data-dir", dir, "--port", String(port)];
  return startMain(args, {}, commandFor(dir));
}

Deno.test("after a SIGKILL and a restart mid-stream, a room resumes with no duplicate and no loss", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chorus-client-" });
  let main = await startSqlite(dir);
  const url = `ws://127.0.0.1:${main.port}/live`;
  const ada = record(url, { name: "Ada", ...FAST });
  try {
    await ada.until("welcome");
    const { client: pub } = await chatClient(`${url}?name=pub`);
    for (let i = 1; i <= 200; i++) pub.say(`a${i}`);
    await ada.until("message", (m) => m.text === "a20"); // mid-stream
    await main.stop(); // SIGKILL
    await ada.status("reconnecting");
    main = await startSqlite(dir, main.port);
    const resumed = await ada.until("welcome");
    assert.equal(resumed.recovered, true);
    assert.ok(resumed.after >= 20, `resumed from the last delivered offset: ${resumed.after}`);
    const { client: pub2 } = await chatClient(`${url}?name=pub2`);
    for (let i = 1; i <= 50; i++) pub2.say(`b${i}`);
    await ada.until("message", (m) => m.text === "b50");
    const offsets = ada.offsets();
    const first = offsets[0]!;
    assert.deepEqual(offsets, offsets.map((_, i) => first + i), "contiguous: none lost or twice");
    const texts = ada.texts();
    assert.equal(new Set(texts).size, texts.length, "no text twice");
    assert.ok(texts.indexOf("a20") < texts.indexOf("b1"), "in order");
    const { client: late, welcome } = await chatClient(`${url}?offset=0&epoch=x`);
    assert.equal(welcome.offset, offsets.at(-1), "the room's latest offset was delivered");
    assert.ok(!ada.log.some((s) => s.type === "gap"), "no gap");
    await Promise.all([pub2.close(), late.close()]);
  } finally {
    await ada.room.close();
    await main.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a restart that lost the stream (--store memory) raises gap and starts over", async () => {
  let main = await startMain();
  const url = `ws://127.0.0.1:${main.port}/r`;
  const ada = record(url, FAST);
  try {
    const before = await ada.until("welcome");
    await ada.room.send("before");
    await ada.until("message");
    await main.stop();
    main = await startMain(["--port", String(main.port)]);
    const gap = await ada.until("gap");
    assert.equal(gap.epochChanged, true);
    assert.equal(gap.previousEpoch, before.epoch);
    assert.equal(gap.lastOffset, 1);
    assert.notEqual(gap.epoch, before.epoch);
    await ada.room.send("after");
    const after = await ada.until("message");
    assert.deepEqual([after.text, after.offset], ["after", 1], "the new epoch counts from 1");
    assert.deepEqual(ada.room.position, { epoch: gap.epoch, offset: 1 });
  } finally {
    await ada.room.close();
    await main.stop();
  }
});

Deno.test("reconnect attempts are spread by jitter and capped", async () => {
  const server = startServer();
  const url = server.ws("/r");
  const rooms = Array.from(
    { length: 6 },
    () => record(url, { ...FAST, baseMs: 100, capMs: 300, transports: ["websocket"] }),
  );
  try {
    await Promise.all(rooms.map((r) => r.until("welcome")));
    await server.close(); // 1001 for everyone, then nothing listens
    const delays = await Promise.all(rooms.map(async (r) => {
      for (let i = 0; i < 4; i++) await r.status("connecting");
      const statuses = r.log.filter((s) => s.type === "status").slice(2); // after the welcome
      const waits = statuses.filter((s) => s.detail.state === "reconnecting");
      for (const wait of waits) {
        const next = statuses.find((s) => s.at > wait.at && s.detail.state === "connecting");
        assert.ok(next!.at - wait.at >= wait.detail.delay - 1, "waited its delay");
      }
      return waits.map((s) => s.detail.delay as number);
    }));
    assert.ok(delays.flat().every((d) => d >= 0 && d <= 300), `capped: ${delays}`);
    const firsts = new Set(delays.map((d) => Math.round(d[0]!)));
    assert.ok(firsts.size >= 4, `first retries spread: ${[...firsts]}`);
  } finally {
    await Promise.all(rooms.map((r) => r.room.close()));
  }
});

const SECRET = "a-test-secret-that-is-long-enough-for-hs256";

/** An HS256 token for {@link SECRET}, expiring in `ttl` seconds. */
function sign(claims: jose.JWTPayload, ttl = 3600): Promise<string> {
  return new jose.SignJWT(claims).setProtectedHeader({ alg: "HS256" })
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
    .sign(new TextEncoder().encode(SECRET));
}

Deno.test("no reconnect after a 4001 token expired close, unless the token option can renew it", async () => {
  const server = startServer({ jwtSecret: SECRET, jwtClockSkew: 0 });
  const fixed = record(server.ws("/r"), { token: await sign({ sub: "a" }, 2), ...FAST });
  let calls = 0;
  const renewing = record(server.ws("/r"), {
    token: () => sign({ sub: "b" }, ++calls === 1 ? 2 : 3600),
    ...FAST,
  });
  try {
    const closed = await fixed.status("closed");
    assert.deepEqual([closed.code, closed.reason], [4001, "token expired"]);
    assert.ok(!fixed.log.some((s) => s.detail?.state === "reconnecting"), "never reconnecting");
    assert.equal(fixed.room.state, "closed");
    await renewing.status("reconnecting");
    await renewing.until("welcome");
    assert.equal(calls, 2);
  } finally {
    await renewing.room.close();
    await server.close();
  }
});

Deno.test("no reconnect after a 403 refusal of the upgrade", async () => {
  const server = startServer({ jwtSecret: SECRET });
  const token = await sign({ sub: "a", rooms: ["/other"] });
  const ada = record(server.ws("/r"), { token, ...FAST });
  try {
    const closed = await ada.status("closed");
    assert.equal(closed.refusal.status, 403);
    assert.equal(closed.transport, "websocket");
    assert.equal(ada.log.filter((s) => s.detail?.state === "connecting").length, 1);
  } finally {
    await server.close();
  }
});

Deno.test("sends wait in a bounded queue until connected; close rejects what still waits", async () => {
  const server = startServer();
  const ada = record(server.ws("/r"), { queueLimit: 2 });
  try {
    const first = ada.room.send("one");
    const second = ada.room.send("two");
    await assert.rejects(ada.room.send("three"), { code: "queue_full" });
    await ada.until("error", (e) => e.code === "queue_full" && e.source === "send");
    await Promise.all([first, second]);
    await ada.until("message", (m) => m.text === "two");
    assert.deepEqual(ada.texts(), ["one", "two"]);
    await assert.rejects(ada.room.send("x".repeat(4097)), { code: "text_too_long" });
  } finally {
    await ada.room.close();
    await server.close();
  }
  const bob = record(server.ws("/r"));
  const waiting = bob.room.send("never");
  await bob.room.close();
  await assert.rejects(waiting, { code: "closed" });
  await assert.rejects(bob.room.send("after close"), { code: "closed" });
});

// ---------------------------------------------------------------------------------------------
// SSE + POST, against an endpoint that follows /work/shared-14/SSE_SPEC.md

/** A minimal SSE endpoint of one room following the wire contract, with hooks for tests. */
class SseEndpoint {
  readonly messages: Event[] = [];
  readonly requests = new Inbox<{ lastEventId: string | null; url: URL }>();
  readonly posts: Event[] = [];
  /** Answer the next GET with this status and body instead of a stream. */
  refuse: { status: number; code: string; retryAfter?: string } | null = null;
  /** Answer WebSocket upgrades with this status (a proxy that kills the upgrade). */
  upgradeStatus = 502;
  readonly #streams = new Map<string, ReadableStreamDefaultController<Uint8Array>>();
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  #sessions = 0;

  constructor() {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (req) => this.#handle(req),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/r`;
  }

  /** Publish a message as the store would: numbered, kept, sent to every open stream. */
  publish(text: string): void {
    const m = messageAt(this.messages.length + 1, text);
    this.messages.push(m);
    for (const c of this.#streams.values()) this.#write(c, m);
  }

  /** End every stream with a close event, as the server does. */
  closeAll(code: number, reason: string): void {
    for (const [session, c] of this.#streams) {
      c.enqueue(encode(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`));
      c.close();
      this.#streams.delete(session);
    }
  }

  async shutdown(): Promise<void> {
    this.closeAll(1001, "server shutting down");
    await this.#server.shutdown();
  }

  #write(c: ReadableStreamDefaultController<Uint8Array>, event: Event): void {
    const id = typeof event.offset === "number" ? `id: e1:${event.offset}\n` : "";
    c.enqueue(encode(`${id}data: ${JSON.stringify(event)}\n\n`));
  }

  #handle(req: Request): Response | Promise<Response> {
    if (req.headers.get("upgrade")) return new Response(null, { status: this.upgradeStatus });
    if (req.method === "POST") return this.#post(req);
    this.requests.push({ lastEventId: req.headers.get("last-event-id"), url: new URL(req.url) });
    if (this.refuse) {
      const { status, code, retryAfter } = this.refuse;
      this.refuse = null;
      const headers: Record<string, string> = retryAfter ? { "retry-after": retryAfter } : {};
      return Response.json({ error: { code, message: code } }, { status, headers });
    }
    return this.#stream(req);
  }

  #stream(req: Request): Response {
    const last = req.headers.get("last-event-id")?.match(/^e1:(\d+)$/);
    const after = last ? Number(last[1]) : 0;
    const session = `s${++this.#sessions}`;
    const welcome = welcomeAt(this.messages.length, this.messages.slice(after), {
      session,
      transport: "sse",
    });
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.#streams.set(session, c);
        // The welcome in two chunks split mid-line, then a comment, as proxies may deliver it.
        const text = `data: ${JSON.stringify(welcome)}\n\n`;
        c.enqueue(encode(text.slice(0, 20)));
        c.enqueue(encode(`${text.slice(20)}: ping\n\n`));
      },
      cancel: () => void this.#streams.delete(session),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache, no-transform",
      },
    });
  }

  async #post(req: Request): Promise<Response> {
    const session = req.headers.get("authorization")?.replace(/^Bearer /, "") ?? "";
    if (!this.#streams.has(session)) {
      await req.body?.cancel();
      const error = { code: "invalid_session", message: "unknown session" };
      return Response.json({ error }, {
        status: 401,
        headers: { "www-authenticate": 'Bearer realm="chorus"' },
      });
    }
    const event = await req.json();
    this.posts.push(event);
    if (event.type === "message") this.publish(event.text);
    return Response.json({}, { status: 202 });
  }
}

const encoder = new TextEncoder();
const encode = (text: string) => encoder.encode(text);

Deno.test("SSE: welcome with a session, sends by POST, resumes with Last-Event-ID, stops at 4001", async () => {
  const sse = new SseEndpoint();
  const ada = record(sse.url, { name: "Ada", transports: ["sse"], ...FAST });
  try {
    const first = await sse.requests.next("the first GET");
    assert.equal(first.lastEventId, null);
    assert.equal(first.url.searchParams.get("name"), "Ada");
    const welcome = await ada.until("welcome");
    assert.equal(welcome.session, "s1");
    assert.equal(ada.room.transport, "sse");
    await ada.room.send("one");
    assert.deepEqual(sse.posts, [{ type: "message", text: "one" }]);
    assert.equal((await ada.until("message")).offset, 1);

    sse.closeAll(1012, "restart");
    const reconnecting = await ada.status("reconnecting");
    assert.deepEqual([reconnecting.code, reconnecting.reason], [1012, "restart"]);
    sse.publish("two"); // while the room is away
    const again = await sse.requests.next("the resuming GET");
    assert.equal(again.lastEventId, "e1:1");
    assert.equal(again.url.searchParams.get("offset"), "1");
    await ada.until("message", (m) => m.text === "two");
    await ada.room.send("three");
    await ada.until("message", (m) => m.text === "three");
    assert.deepEqual(ada.texts(), ["one", "two", "three"]);

    sse.closeAll(4001, "token expired");
    const closed = await ada.status("closed");
    assert.deepEqual([closed.code, closed.transport], [4001, "sse"]);
  } finally {
    await ada.room.close();
    await sse.shutdown();
  }
});

Deno.test("SSE: a 403 refusal stops; a 503 with Retry-After waits at least that long", async () => {
  const sse = new SseEndpoint();
  try {
    sse.refuse = { status: 503, code: "shutting_down", retryAfter: "0.2" };
    const ada = record(sse.url, { transports: ["sse"], ...FAST });
    const waiting = await ada.status("reconnecting");
    assert.equal(waiting.refusal.code, "shutting_down");
    assert.ok(waiting.delay >= 200, `${waiting.delay}`);
    await ada.until("welcome");
    await ada.room.close();

    sse.refuse = { status: 403, code: "forbidden_room" };
    const bob = record(sse.url, { transports: ["sse"], ...FAST });
    const closed = await bob.status("closed");
    assert.deepEqual([closed.refusal.status, closed.refusal.code], [403, "forbidden_room"]);
  } finally {
    await sse.shutdown();
  }
});

Deno.test("fallback: after two failed WebSocket attempts the room uses SSE and says so", async () => {
  const sse = new SseEndpoint(); // upgrades get 502, as from a proxy that kills them
  const ada = record(sse.url.replace("http:", "ws:"), { ...FAST, websocketRetryMs: 60_000 });
  try {
    const open = await ada.status("open");
    assert.deepEqual([open.transport, open.fallback], ["sse", true]);
    const tried = ada.log.filter((s) => s.detail?.state === "connecting").map((s) =>
      s.detail.transport
    );
    assert.deepEqual(tried, ["websocket", "websocket", "sse"]);
    await ada.room.send("over sse");
    await ada.until("message", (m) => m.text === "over sse");
  } finally {
    await ada.room.close();
    await sse.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------
// Serving and importing

Deno.test("chorus serves the library at /chorus.js, cached 5 minutes, importable cross-origin", async () => {
  const source = await Deno.readTextFile(`${ROOT}static/chorus.js`);
  const server = startServer();
  try {
    const res = await fetch(`${server.origin}/chorus.js`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.equal(res.headers.get("cache-control"), "public, max-age=300");
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.equal(await res.text(), source);
    const etag = res.headers.get("etag")!;
    const again = await fetch(`${server.origin}/chorus.js`, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    assert.equal(again.headers.get("cache-control"), "public, max-age=300");
    await again.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("Node imports chorus.js and chats over its WebSocket", async () => {
  const server = startServer();
  try {
    const script = `
      const { connect, SUBPROTOCOL } = await import("./static/chorus.js");
      if (typeof WebSocket !== "function") throw new Error("no WebSocket in this Node");
      const room = connect(${JSON.stringify(server.ws("/node"))}, { name: "node" });
      room.on("welcome", () => room.send("from node"));
      room.on("message", async (m) => {
        console.log(SUBPROTOCOL, room.transport, m.from.name, m.text);
        await room.close();
      });`;
    const version = await runToEnd("node", { args: ["--version"] });
    // Node 22+ has a global WebSocket; Node 20 and 21 only behind --experimental-websocket.
    const major = Number(version.stdout.match(/^v(\d+)/)?.[1]);
    const flags = major < 22 ? ["--experimental-websocket"] : [];
    const out = await within(
      runToEnd("node", { args: [...flags, "--input-type=module", "-e", script], cwd: ROOT }),
      "node to chat and exit",
    );
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "chorus.v1 websocket node from node\n");
  } finally {
    await server.close();
  }
});

Deno.test("SSE: a stream silent for longer than sseIdleMs is dropped and resumed", async () => {
  const sse = new SseEndpoint(); // sends its welcome and one ping, then nothing
  const ada = record(sse.url, { transports: ["sse"], sseIdleMs: 150, ...FAST });
  try {
    await ada.until("welcome");
    const dropped = await ada.status("reconnecting");
    assert.equal(dropped.reason, "stream idle");
    await ada.until("welcome");
  } finally {
    await ada.room.close();
    await sse.shutdown();
  }
});

Deno.test("over the server's own SSE, a room chats with a WebSocket member both ways", async () => {
  const server = startServer();
  const sia = record(`${server.origin}/mixed`, { name: "Sia", transports: ["sse"], ...FAST });
  try {
    const welcome = await sia.until("welcome");
    assert.equal(sia.room.transport, "sse");
    assert.equal(typeof welcome.session, "string", "an SSE member's welcome has a session");
    const { client: ws } = await chatClient(server.ws("/mixed?name=Wes"));
    await sia.until("join", (j) => j.name === "Wes");
    await sia.room.send("from SSE");
    const heard = await ws.until("message");
    assert.deepEqual([heard.text, heard.from.name], ["from SSE", "Sia"]);
    ws.sendEvent({ type: "message", text: "from WebSocket" });
    const got = await sia.until("message", (m) => m.text === "from WebSocket");
    assert.equal(got.offset, heard.offset + 1, "one stream, one order");
    await sia.room.rename("Sia K.");
    assert.equal((await ws.until("rename")).name, "Sia K.");
    await ws.close();
  } finally {
    await sia.room.close();
    await server.close();
  }
});
