/**
 * The Redis backplane's wire format and names, without a Redis server: what `src/redis_bus.ts`
 * publishes must come back as the same bus message, binary data byte for byte, and names must
 * keep each room on one Redis Cluster slot. One test runs a bus on a real `redis-server`
 * (ignored with the reason when it is not installed).
 */
import assert from "node:assert/strict";
import type { BusMessage } from "../src/bus.ts";
import {
  CONTROL_CHANNEL,
  decode,
  encode,
  historyKey,
  redactUrl,
  RedisBus,
  roomChannel,
} from "../src/redis_bus.ts";
import { createClient } from "redis";
import { createLogger } from "../src/log.ts";
import { Metrics } from "../src/metrics.ts";
import { Inbox, redisMissing, startRedis } from "./helpers.ts";

const missing = await redisMissing();

Deno.test("bus messages survive encoding, binary data byte for byte, node first for echo skipping", () => {
  const event = {
    type: "message" as const,
    id: "abc123-7",
    from: { id: "abc123-1", name: "Ada ✓" },
    text: "line\nbreak \u2028 and 🎉",
    ts: 1764082800000,
  };
  const backing = new Uint8Array([9, 9, 0, 1, 2, 254, 255, 9]);
  const messages: BusMessage[] = [
    { t: "message", node: "abc123", room: "/lobby", event },
    { t: "binary", node: "abc123", room: "/lobby", data: backing.subarray(2, 7) },
    { t: "binary", node: "abc123", room: "/lobby", data: new Uint8Array(0) },
    { t: "join", node: "abc123", room: "/a", member: { id: "x", name: "y", mode: "raw" } },
    { t: "members", node: "abc123", rooms: [["/a", [{ id: "x", name: "y", mode: "chat" }]]] },
    { t: "bye", node: "abc123" },
  ];
  for (const m of messages) {
    const wire = encode(m);
    assert.ok(wire.startsWith(`{"node":"abc123",`), wire);
    const back = decode(wire);
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
  assert.throws(() => decode("not json"), SyntaxError);
});

Deno.test("a room's channel and history share one hash tag; the control channel has its own", () => {
  const tag = (name: string) => name.slice(name.indexOf("{") + 1, name.indexOf("}"));
  assert.equal(roomChannel("/lobby"), "chorus:{/lobby}:events");
  assert.equal(historyKey("/lobby"), "chorus:{/lobby}:history");
  assert.equal(tag(roomChannel("/a/b%20c")), tag(historyKey("/a/b%20c")));
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
      history: 0,
      historyTtlMs: 0,
      log: createLogger({ level: "error", format: "json", write: () => {} }),
      metrics: new Metrics(),
    });
    try {
      const heard = new Inbox<string>();
      await listener.connect();
      await listener.subscribe(CONTROL_CHANNEL, (payload) => heard.push(payload));
      // Nothing was published on the bus; a node learned from the first publish would be
      // unknown, and neither the resync request on connecting nor the heartbeat would be sent.
      const sync = decode(await heard.next("the resync request sent on connecting"));
      assert.deepEqual([sync.t, sync.node], ["sync", "n-explicit"]);
      const alive = decode(await heard.next("a heartbeat"));
      assert.deepEqual([alive.t, alive.node], ["alive", "n-explicit"]);
    } finally {
      await bus.close();
      await listener.quit();
      await redis.kill();
    }
  },
});
