/**
 * The Redis backplane: its wire format and names without a Redis server (what `src/redis_bus.ts`
 * publishes must come back as the same message, binary data byte for byte, and names must keep
 * each room on one Redis Cluster slot), then the bus and stream store on a real `redis-server`
 * (ignored with the reason when it is not installed): one order per room across instances,
 * reads, retention, epochs, and what happens while Redis is down.
 */
import assert from "node:assert/strict";
import type { BusMessage } from "../src/bus.ts";
import {
  BACKPLANE_NODE,
  CONTROL_CHANNEL,
  decode,
  decodeRoom,
  encode,
  encodeRoom,
  metaKey,
  redactUrl,
  RedisBus,
  type RedisBusOptions,
  roomChannel,
  type RoomWire,
  streamKey,
  StreamUnavailable,
} from "../src/redis_bus.ts";
import { createClient } from "redis";
import { createLogger } from "../src/log.ts";
import { C, Metrics } from "../src/metrics.ts";
import type { MessageEvent } from "../src/protocol.ts";
import type { Appended, Frame, StreamPage } from "../src/store.ts";
import { Inbox, waitFor } from "./events.ts";
import { redisMissing, startRedis } from "./redis_server.ts";

const missing = await redisMissing();

Deno.test("control messages survive encoding, node first for echo skipping", () => {
  const messages: BusMessage[] = [
    { t: "join", node: "abc123", room: "/a", member: { id: "x", name: "y", mode: "raw" } },
    { t: "rename", node: "abc123", room: "/a", id: "x", name: "Ada ✓", oldName: "y" },
    { t: "members", node: "abc123", rooms: [["/a", [{ id: "x", name: "y", mode: "chat" }]]] },
    { t: "sync", node: "abc123" },
    { t: "bye", node: "abc123" },
  ];
  for (const m of messages) {
    const wire = encode(m);
    assert.ok(wire.startsWith(`{"node":"abc123",`), wire);
    assert.deepEqual(decode(wire), m);
  }
  assert.throws(() => decode("not json"), SyntaxError);
});

Deno.test("room frames survive encoding: stored messages with epoch and offset, binary data byte for byte", () => {
  const event = message("abc123-7", "line\nbreak \u2028 and 🎉");
  const backing = new Uint8Array([9, 9, 0, 1, 2, 254, 255, 9]);
  const frames: RoomWire[] = [
    { t: "stored", room: "/lobby", epoch: "0f3a9c2e7b1d", offset: 42, event },
    { t: "binary", room: "/lobby", data: backing.subarray(2, 7) },
    { t: "binary", room: "/a/b%20c", data: new Uint8Array(0) },
  ];
  for (const m of frames) {
    const back = decodeRoom(encodeRoom(m));
    if (m.t === "binary") {
      assert.equal(back.t, "binary");
      const data = (back as typeof m).data;
      assert.deepEqual([...data], [...m.data]);
      assert.equal(data.byteOffset, 0);
      assert.equal(data.buffer.byteLength, m.data.byteLength, "a buffer of its own");
    } else {
      assert.deepEqual(back, m);
    }
  }
  assert.throws(() => decodeRoom("not json"), SyntaxError);
});

Deno.test("a room's channel, stream and state share one hash tag; the control channel has its own", () => {
  const tag = (name: string) => name.slice(name.indexOf("{") + 1, name.indexOf("}"));
  assert.equal(roomChannel("/lobby"), "chorus:{/lobby}:events");
  assert.equal(streamKey("/lobby"), "chorus:{/lobby}:stream");
  assert.equal(metaKey("/lobby"), "chorus:{/lobby}:meta");
  assert.equal(tag(roomChannel("/a/b%20c")), tag(streamKey("/a/b%20c")));
  assert.equal(tag(metaKey("/a/b%20c")), tag(streamKey("/a/b%20c")));
  assert.equal(tag(CONTROL_CHANNEL), "control");
});

Deno.test("Redis URLs are logged without their password", () => {
  assert.equal(redactUrl("redis://:hunter2@cache:6379/1"), "redis://:***@cache:6379/1");
  assert.equal(redactUrl("redis://app:hunter2@cache"), "redis://app:***@cache");
  assert.equal(redactUrl("redis://cache:6379"), "redis://cache:6379");
});

Deno.test({
  name: missing
    ? `a bus knows its node before publishing anything (ignored: ${missing})`
    : "a bus knows its node before publishing anything: its resync request and heartbeat carry it",
  ignore: missing !== undefined,
  async fn() {
    const redis = await startRedis();
    const listener = createClient({ url: redis.url });
    const bus = new RedisBus({
      url: redis.url,
      node: "n-explicit",
      retainMessages: 0,
      retainMs: 0,
      log: createLogger({ level: "error", format: "json", write: () => {} }),
      metrics: new Metrics(),
    });
    try {
      const heard = new Inbox<string>();
      await listener.connect();
      await listener.subscribe(CONTROL_CHANNEL, (payload) => heard.push(payload));
      // Nothing was published on the bus; a node learned from the first publish would be
      // unknown, and neither the resync request on connecting nor the heartbeat would be sent.
      // The resync request goes out once the bus is subscribed again, so a heartbeat may
      // come first.
      const seen = new Map<string, string>();
      while (seen.size < 2) {
        const m = decode(await heard.next("the resync request and a heartbeat"));
        seen.set(m.t, m.node);
      }
      assert.deepEqual(Object.fromEntries(seen), { sync: "n-explicit", alive: "n-explicit" });
    } finally {
      await bus.close();
      await listener.quit();
      await redis.kill();
    }
  },
});

/** A chat message as a hub would append it. */
function message(id: string, text: string): MessageEvent {
  return { type: "message", id, from: { id: "abc123-1", name: "Ada ✓" }, text, ts: 1764082800000 };
}

/** What a store receiver was handed. */
interface Got {
  room: string;
  epoch: string;
  frame: Frame;
}

/** The offset a frame was delivered with, if any. */
function offsetOf(frame: Frame): number | undefined {
  return (frame as MessageEvent & { offset?: number }).offset;
}

/** What a test reads of a delivered frame: chat as `[offset, text]`, binary as its bytes. */
function shown(frame: Frame): string {
  return frame instanceof Uint8Array ? `bin:${[...frame]}` : `${offsetOf(frame)}:${frame.text}`;
}

/** A {@link RedisBus} whose bus messages and room frames land in inboxes. */
interface TestBus {
  bus: RedisBus;
  metrics: Metrics;
  messages: Inbox<BusMessage>;
  frames: Inbox<Got>;
}

/** The next item of `inbox` for which `pred` holds; the others are dropped. */
async function until<T>(inbox: Inbox<T>, pred: (item: T) => boolean, label: string): Promise<T> {
  for (;;) {
    const item = await inbox.next(label);
    if (pred(item)) return item;
  }
}

/** The bus's own `sync`: Redis is up and every watched room's channel is subscribed. */
function synced(t: TestBus): Promise<BusMessage> {
  return until(
    t.messages,
    (m) => m.t === "sync" && m.node === BACKPLANE_NODE,
    "the backplane's sync after connecting",
  );
}

/** Start a bus on `url` and wait until it is connected. */
async function startBus(
  url: string,
  node: string,
  options: Partial<RedisBusOptions> = {},
): Promise<TestBus> {
  const metrics = new Metrics();
  const bus = new RedisBus({
    url,
    node,
    retainMessages: 100,
    retainMs: 60_000,
    log: createLogger({ level: "error", format: "json", write: () => {} }),
    metrics,
    ...options,
  });
  const t: TestBus = { bus, metrics, messages: new Inbox(), frames: new Inbox() };
  bus.subscribe((m: BusMessage) => t.messages.push(m));
  bus.listen((room: string, epoch: string, frame: Frame) => t.frames.push({ room, epoch, frame }));
  await synced(t);
  return t;
}

/** The next `n` frames a bus delivers. */
async function take(t: TestBus, n: number, label: string): Promise<Got[]> {
  const got: Got[] = [];
  for (let i = 0; i < n; i++) got.push(await t.frames.next(`${label} (${i + 1} of ${n})`));
  return got;
}

/** Append and resolve with what `done` is told. */
function appended(t: TestBus, room: string, frame: Frame): Promise<Appended> {
  return new Promise((resolve) => t.bus.append(room, frame, resolve));
}

/** A page as `[offset, text]` pairs, for comparisons. */
function pairs(page: StreamPage): [number | undefined, string][] {
  return page.messages.map((m) => [offsetOf(m), m.text]);
}

/** Register a test that needs `redis-server`, ignored with the reason when it is missing. */
function redisTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: missing ? `${name} (ignored: ${missing})` : name,
    ignore: missing !== undefined,
    fn,
  });
}

redisTest(
  "concurrent appends from two instances: one order everywhere, offsets consecutive from 1, each sender's order kept, own echo delivered",
  async () => {
    const redis = await startRedis();
    const a = await startBus(redis.url, "aaaaaa");
    const b = await startBus(redis.url, "bbbbbb");
    try {
      const room = "/one/order";
      await Promise.all([a.bus.watch(room), b.bus.watch(room)]);
      const perSender = 300;
      const done = new Map<string, Appended>();
      for (let i = 0; i < perSender; i++) {
        for (const [t, name] of [[a, "a"], [b, "b"]] as const) {
          const text = `${name}${i}`;
          t.bus.append(room, message(`${name}-${i}`, text), (r) => done.set(text, r));
        }
      }
      const seenA = await take(a, 2 * perSender, "frames on A");
      const seenB = await take(b, 2 * perSender, "frames on B");
      assert.deepEqual(seenA.map((g) => shown(g.frame)), seenB.map((g) => shown(g.frame)));
      assert.deepEqual(seenA.map((g) => offsetOf(g.frame)), seenA.map((_, i) => i + 1));
      const epoch = seenA[0]!.epoch;
      assert.match(epoch, /^[0-9a-f]{12}$/);
      assert.ok([...seenA, ...seenB].every((g) => g.room === room && g.epoch === epoch));
      for (const name of ["a", "b"]) {
        const texts = seenA.map((g) => (g.frame as MessageEvent).text).filter((t) =>
          t.startsWith(name)
        );
        assert.deepEqual(texts, texts.map((_, i) => `${name}${i}`), `${name}'s order`);
      }
      await waitFor(() => done.size === 2 * perSender, "every done callback");
      for (const g of seenA) {
        const text = (g.frame as MessageEvent).text;
        assert.deepEqual(done.get(text), { epoch, offset: offsetOf(g.frame) }, text);
      }
      assert.equal(a.metrics.row[C.backplaneDropped], 0);
      assert.equal(b.metrics.row[C.backplaneDropped], 0);
    } finally {
      await Promise.all([a.bus.close(), b.bus.close()]);
      await redis.kill();
    }
  },
);

redisTest(
  "binary frames keep their place among a sender's chat messages, on every instance",
  async () => {
    const redis = await startRedis();
    const a = await startBus(redis.url, "aaaaaa");
    const b = await startBus(redis.url, "bbbbbb");
    try {
      const room = "/mixed";
      await Promise.all([a.bus.watch(room), b.bus.watch(room)]);
      const sent: Frame[] = [];
      for (let i = 0; i < 100; i++) {
        sent.push(message(`a-${i}`, `t${i}`), new Uint8Array([i, 255 - i, 0]));
      }
      const results: Appended[] = [];
      for (const frame of sent) a.bus.append(room, frame, (r) => results.push(r));
      const expected = sent.map((f, i) =>
        f instanceof Uint8Array ? shown(f) : `${i / 2 + 1}:${(f as MessageEvent).text}`
      );
      for (const t of [a, b]) {
        const got = await take(t, sent.length, "mixed frames");
        assert.deepEqual(got.map((g) => shown(g.frame)), expected);
        const epoch = got[0]!.epoch;
        assert.ok(got.every((g) => g.epoch === epoch), "binary frames carry the room's epoch");
      }
      await waitFor(() => results.length === sent.length, "every done callback");
      // Told in the order appended: chat messages their offsets, binary frames null (not kept).
      assert.deepEqual(
        results.map((r) => r?.offset ?? null),
        sent.map((f, i) => f instanceof Uint8Array ? null : i / 2 + 1),
      );
    } finally {
      await Promise.all([a.bus.close(), b.bus.close()]);
      await redis.kill();
    }
  },
);

redisTest(
  "reads return exactly the kept messages: after, before, last; trimming advances first; the room expires whole",
  async () => {
    const redis = await startRedis();
    const retainMs = 600_000;
    const a = await startBus(redis.url, "aaaaaa", { retainMessages: 5, retainMs });
    const b = await startBus(redis.url, "bbbbbb", { retainMessages: 5, retainMs });
    const client = createClient({ url: redis.url });
    try {
      await client.connect();
      const room = "/kept";
      await a.bus.watch(room);
      for (let i = 1; i <= 8; i++) a.bus.append(room, message(`a-${i}`, `m${i}`));
      const got = await take(a, 8, "appended messages");
      const epoch = got[0]!.epoch;
      const kept = (...offsets: number[]) => offsets.map((o) => [o, `m${o}`]);
      for (const t of [a, b]) {
        const page = await t.bus.read(room, { after: 0, limit: 100 });
        assert.deepEqual(
          { epoch: page.epoch, offset: page.offset, first: page.first, lost: page.lost },
          { epoch, offset: 8, first: 4, lost: 0 },
        );
        assert.deepEqual(pairs(page), kept(4, 5, 6, 7, 8));
        assert.deepEqual(pairs(await t.bus.read(room, { after: 5, limit: 2 })), kept(6, 7));
        assert.deepEqual(pairs(await t.bus.read(room, { after: 8, limit: 2 })), []);
        assert.deepEqual(pairs(await t.bus.read(room, { before: 7, limit: 2 })), kept(6, 5));
        assert.deepEqual(pairs(await t.bus.read(room, { before: 5, limit: 10 })), kept(4));
        assert.deepEqual(pairs(await t.bus.read(room, { before: 4, limit: 10 })), []);
        assert.deepEqual(pairs(await t.bus.read(room, { before: 100, limit: 1 })), kept(8));
        assert.deepEqual(pairs(await t.bus.read(room, { last: 3 })), kept(6, 7, 8));
        assert.deepEqual(pairs(await t.bus.read(room, { last: 50 })), kept(4, 5, 6, 7, 8));
      }
      const page = await b.bus.read(room, { last: 1 });
      const { offset: _, ...stored } = page.messages[0] as MessageEvent & { offset?: number };
      assert.deepEqual(stored, message("a-8", "m8"), "kept as appended");
      for (const key of [metaKey(room), streamKey(room)]) {
        const ttl = await client.pTTL(key);
        assert.ok(ttl > retainMs - 60_000 && ttl <= retainMs, `${key} expires in ${ttl} ms`);
      }
    } finally {
      await Promise.all([a.bus.close(), b.bus.close()]);
      await client.quit();
      await redis.kill();
    }
  },
);

redisTest(
  "retainMessages 0 numbers messages without keeping them; what Redis publishes is encodeRoom's text",
  async () => {
    const redis = await startRedis();
    const a = await startBus(redis.url, "aaaaaa", { retainMessages: 0 });
    const listener = createClient({ url: redis.url });
    try {
      const room = "/unkept";
      const heard = new Inbox<string>();
      await listener.connect();
      await listener.subscribe(roomChannel(room), (payload) => heard.push(payload));
      const first = await appended(a, room, message("a-1", "one"));
      const second = await appended(a, room, message("a-2", "two"));
      assert.ok(first && second);
      assert.deepEqual([first.offset, second.offset, second.epoch], [1, 2, first.epoch]);
      assert.equal(
        await heard.next("the published message"),
        encodeRoom({
          t: "stored",
          room,
          epoch: first.epoch,
          offset: 1,
          event: message("a-1", "one"),
        }),
      );
      const page = await a.bus.read(room, { last: 10 });
      assert.deepEqual(
        [page.epoch, page.offset, page.first, page.messages],
        [first.epoch, 2, 3, []],
      );
    } finally {
      await a.bus.close();
      await listener.quit();
      await redis.kill();
    }
  },
);

redisTest(
  "the epoch: agreed on by every instance for an empty room, kept across an instance's restart, new once the room's keys are gone",
  async () => {
    const redis = await startRedis();
    let a = await startBus(redis.url, "aaaaaa");
    const b = await startBus(redis.url, "bbbbbb");
    const client = createClient({ url: redis.url });
    try {
      await client.connect();
      const [emptyA, emptyB] = await Promise.all([
        a.bus.read("/empty", { last: 10 }),
        b.bus.read("/empty", { last: 10 }),
      ]);
      assert.equal(emptyA.epoch, emptyB.epoch);
      assert.deepEqual([emptyA.offset, emptyA.first, emptyA.messages], [0, 1, []]);
      const room = "/lasting";
      for (let i = 1; i <= 3; i++) await appended(a, room, message(`a-${i}`, `m${i}`));
      const before = await a.bus.read(room, { last: 10 });
      await a.bus.close();
      a = await startBus(redis.url, "cccccc");
      const after = await a.bus.read(room, { last: 10 });
      assert.deepEqual(after, before, "a new instance finds the same stream");
      assert.equal((await appended(a, room, message("c-1", "m4")))?.offset, 4);

      await client.del([metaKey(room), streamKey(room)]);
      const fresh = await a.bus.read(room, { last: 10 });
      assert.notEqual(fresh.epoch, before.epoch);
      assert.deepEqual([fresh.offset, fresh.first, fresh.messages], [0, 1, []]);
      assert.deepEqual(await appended(b, room, message("b-1", "new")), {
        epoch: fresh.epoch,
        offset: 1,
      });
    } finally {
      await Promise.all([a.bus.close(), b.bus.close()]);
      await client.quit();
      await redis.kill();
    }
  },
);

redisTest(
  "Redis down: appends reach local members without offset and done(null), reads reject; after the backplane's sync the rooms are live again",
  async () => {
    const redis = await startRedis();
    const a = await startBus(redis.url, "aaaaaa");
    const b = await startBus(redis.url, "bbbbbb");
    const client = createClient({ url: redis.url });
    try {
      const room = "/outage";
      await Promise.all([a.bus.watch(room), b.bus.watch(room)]);
      const stored = await appended(a, room, message("a-1", "stored"));
      assert.ok(stored);
      await take(a, 1, "the stored message");
      await take(b, 1, "the stored message");

      await redis.kill();
      await waitFor(() => a.metrics.row[C.backplaneUp] === 0, "A noticing Redis is down");
      const dropped = a.metrics.row[C.backplaneDropped]!;
      const results: Appended[] = [];
      const event = { ...message("a-2", "local"), offset: 99 };
      a.bus.append(room, event, (r) => results.push(r));
      a.bus.append(room, new Uint8Array([1, 2, 3]), (r) => results.push(r));
      const [text, binary] = await take(a, 2, "frames delivered locally");
      assert.deepEqual(text, { room, epoch: stored.epoch, frame: message("a-2", "local") });
      assert.equal(offsetOf(text!.frame), undefined, "no offset: not stored");
      assert.deepEqual(binary, { room, epoch: stored.epoch, frame: new Uint8Array([1, 2, 3]) });
      assert.deepEqual(results, [null, null]);
      assert.equal(a.metrics.row[C.backplaneDropped], dropped + 2);
      await assert.rejects(a.bus.read(room, { last: 10 }), StreamUnavailable);
      a.bus.append("/nobody-here", message("a-3", "unwatched"));

      await redis.restart();
      await Promise.all([synced(a), synced(b)]);
      // The sync comes only once the room's channel is subscribed again.
      await client.connect();
      const subscribers = await client.pubSubNumSub(roomChannel(room));
      assert.equal(subscribers[roomChannel(room)], 2);
      const again = await appended(b, room, message("b-1", "back"));
      assert.ok(again);
      assert.notEqual(again.epoch, stored.epoch, "an empty Redis starts the room over");
      assert.equal(again.offset, 1);
      for (const t of [a, b]) {
        const got = await t.frames.next("the message after recovery");
        assert.deepEqual([got.epoch, shown(got.frame)], [again.epoch, "1:back"]);
      }
      assert.equal(a.frames.size, 0, "nothing of the unwatched room was delivered");
    } finally {
      await Promise.all([a.bus.close(), b.bus.close()]);
      await client.quit();
      await redis.kill();
    }
  },
);
