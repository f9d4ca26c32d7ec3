/**
 * The operator's endpoints across nodes, through `main.ts` as `deno task start` runs it: with
 * `--workers 2` (one stats line per worker; a disconnect and a room close reach members on the
 * other worker; the room list covers rooms held by the other worker) and with two instances on
 * a real `redis-server` (the same, across instances). Without `redis-server` the Redis test is
 * registered as ignored with the reason in its name.
 */
import assert from "node:assert/strict";
import { mintToken } from "../src/auth.ts";
import {
  chatClient,
  type Event,
  type MainProcess,
  redisMissing,
  startMain,
  startRedis,
  waitFor,
} from "./helpers.ts";
import { SseStream } from "./sse_client.ts";

const KEY = "admin-cluster-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };
const SECRET = "admin-cluster-jwt-secret-0123456789abcdef";

function ws(main: MainProcess, path: string): string {
  return `ws://127.0.0.1:${main.port}${path}`;
}

/** SIGTERM a process and expect a clean exit. */
async function stop(main: MainProcess): Promise<void> {
  main.child.kill("SIGTERM");
  const out = await main.output();
  assert.equal(out.code, 0, out.stderr);
}

/** Read a stats stream until an event satisfies `ok`; that event. */
async function statsUntil(stream: SseStream, ok: (e: Event) => boolean): Promise<Event> {
  for (;;) {
    const m = await stream.next("a stats event");
    assert.equal(m.event, "stats");
    const e = JSON.parse(m.data!);
    if (ok(e)) return e;
  }
}

/** POST a control to one node with the key. */
async function control(main: MainProcess, path: string, body: unknown): Promise<Event> {
  const res = await fetch(`${main.url}api/admin/${path}`, {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return await res.json();
}

async function rooms(main: MainProcess): Promise<Map<string, Event>> {
  const res = await fetch(`${main.url}api/admin/rooms`, { headers: AUTH });
  const body = await res.json();
  return new Map(body.rooms.map((r: Event) => [r.room, r]));
}

async function publish(main: MainProcess, room: string, text: string): Promise<void> {
  const res = await fetch(`${main.url}api/admin/publish?room=${room}`, {
    method: "POST",
    headers: { ...AUTH, "content-type": "text/plain" },
    body: text,
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
}

/** A member {@link Placer} connected, with the node id of the worker that took it. */
type Placed = Awaited<ReturnType<Placer["connect"]>>;

/**
 * Connects chat members to a `--workers` server and tells which worker took each, from the
 * stats stream's per-worker connection counts (with `--jwt-secret`, ids say nothing of it).
 */
class Placer {
  /** Chat connections open, as the stats should count them. */
  #open = 0;
  /** The counts per worker after the latest connect, while no one has left since. */
  #last: Map<string, number> | undefined;

  constructor(readonly main: MainProcess, readonly stream: SseStream) {}

  /** Connect `path` with a token for `sub`; the client, its welcome and its worker's node id. */
  async connect(path: string, sub: string) {
    const token = await mintToken({ secret: SECRET, sub, ttlSeconds: 600 });
    const before = this.#last ?? await this.#counted();
    const sep = path.includes("?") ? "&" : "?";
    const { client, welcome } = await chatClient(ws(this.main, `${path}${sep}token=${token}`));
    this.#open++;
    const after = await this.#counted();
    this.#last = after;
    const node = [...after].find(([n, count]) => count > (before.get(n) ?? 0))![0];
    return { client, welcome, node };
  }

  /** Connect members of `path` (ids `sub`, `sub`…) until both workers hold one; all of them. */
  async spread(path: string, sub: (i: number) => string) {
    const placed = [];
    for (let i = 0; new Set(placed.map((p) => p.node)).size < 2; i++) {
      assert.ok(i < 40, "40 connections all landed on one worker");
      placed.push(await this.connect(path, sub(i)));
    }
    return placed;
  }

  /** Every member closed: none is counted any more. */
  closed(n: number): void {
    this.#open -= n;
    this.#last = undefined;
  }

  /** Chat connections per worker, once the stats count every open one. */
  async #counted(): Promise<Map<string, number>> {
    const e = await statsUntil(this.stream, (e) => e.total.connections.chat === this.#open);
    return new Map(e.nodes.map((n: Event) => [n.node, n.connections.chat]));
  }
}

Deno.test("with --workers 2: a stats line per worker, and controls reach the other worker", async () => {
  const main = await startMain(["--workers", "2", "--api-key", KEY, "--jwt-secret", SECRET]);
  const stream = await SseStream.open(`${main.url}api/admin/stream`, AUTH);
  try {
    const both = await statsUntil(stream, (e) => e.nodes.length === 2);
    assert.deepEqual(both.nodes.map((n: Event) => n.label).sort(), ["worker 1", "worker 2"]);
    assert.equal(new Set(both.nodes.map((n: Event) => n.node)).size, 2);
    const placer = new Placer(main, stream);

    // A room held by each worker alone: whichever worker answers, the room list has the
    // other's too, with its offset read from the store.
    const guests = await placer.spread("/solo", (i) => `guest${i}`);
    const a = await placer.connect("/on-a", "a");
    const tries: Placed[] = [];
    while (!tries.some((t) => t.node !== a.node)) {
      assert.ok(tries.length < 40, "40 connections all landed on one worker");
      tries.push(await placer.connect(`/on-b${tries.length}`, "b"));
    }
    const b = tries.at(-1)!;
    const roomB = b.welcome.room;
    await publish(main, "/on-a", "one");
    await publish(main, roomB, "one");
    await publish(main, roomB, "two");
    await a.client.until("message");
    await b.client.until("message");
    await b.client.until("message");
    await waitFor(async () => {
      const listed = await rooms(main);
      return listed.get("/on-a")?.offset === 1 && listed.get(roomB)?.offset === 2 &&
        listed.get("/solo")?.members === guests.length;
    }, "every room listed with its offset");

    // One member id connected on both workers: one disconnect closes it everywhere.
    const alice = await placer.spread("/shared", () => "alice");
    const answer = await control(main, "disconnect", { room: "/shared", id: "alice" });
    assert.equal(answer.relayed, true);
    assert.ok(answer.disconnected < alice.length, "some were on the other worker");
    for (const { client } of alice) {
      assert.deepEqual(await client.closed, { code: 4003, reason: "disconnected by operator" });
    }
    placer.closed(alice.length);

    // Members of one room on both workers: one close-room closes them all, and no one else.
    const closed = await control(main, "close-room", { room: "/solo", reason: "moving" });
    assert.equal(closed.relayed, true);
    for (const { client } of guests) {
      assert.deepEqual(await client.closed, { code: 4004, reason: "moving" });
    }
    b.client.say("still here");
    assert.equal((await b.client.until("message")).text, "still here");
    await Promise.all([a, ...tries].map((m) => m.client.close()));
  } finally {
    await stream.cancel();
    await stop(main);
  }
});

const missing = await redisMissing();

Deno.test({
  name: `with --redis-url, two instances: a stats line each, and controls reach the other${
    missing ? ` (ignored: ${missing})` : ""
  }`,
  ignore: missing !== undefined,
  async fn() {
    const redis = await startRedis();
    const args = ["--redis-url", redis.url, "--api-key", KEY];
    const started: MainProcess[] = [];
    let stream: SseStream | undefined;
    try {
      started.push(await startMain(args));
      started.push(await startMain(args));
      const [a, b] = started as [MainProcess, MainProcess];
      stream = await SseStream.open(`${a.url}api/admin/stream`, AUTH);
      const both = await statsUntil(stream, (e) => e.nodes.length === 2);
      const labels = both.nodes.map((n: Event) => n.label);
      assert.deepEqual(labels, both.nodes.map((n: Event) => `instance ${n.node}`));

      // Members on B only; A lists the room, reads its offset from Redis, and closes them.
      const kicked = await chatClient(ws(b, "/far?name=Kim"));
      const stays = await chatClient(ws(b, "/far?name=Sam"));
      await kicked.client.until("join");
      await publish(a, "/far", "hello from A");
      assert.equal((await stays.client.until("message")).text, "hello from A");
      await waitFor(async () => (await rooms(a)).get("/far")?.offset === 1, "A lists /far");
      const far = (await rooms(a)).get("/far")!;
      assert.equal(far.members, 2);
      assert.ok(far.lastActivity > Date.now() - 60_000);
      await statsUntil(stream, (e) => e.total.connections.chat === 2);

      const answer = await control(a, "disconnect", { room: "/far", id: kicked.welcome.id });
      assert.deepEqual(answer, { disconnected: 0, relayed: true });
      assert.deepEqual(await kicked.client.closed, {
        code: 4003,
        reason: "disconnected by operator",
      });
      const leave = await stays.client.until("leave");
      assert.equal(leave.name, "Kim");
      const after = await statsUntil(stream, (e) => e.disconnects.kicked === 1);
      assert.equal(after.total.connections.chat, 1);

      const closed = await control(a, "close-room", { room: "/far" });
      assert.deepEqual(closed, { disconnected: 0, relayed: true });
      assert.deepEqual(await stays.client.closed, {
        code: 4004,
        reason: "room closed by operator",
      });
    } finally {
      await stream?.cancel();
      await Promise.all(started.map(stop));
      await redis.kill();
    }
  },
});
