/**
 * Every kind of disconnect is cleaned up: an idle peer that never answers pings is dropped,
 * and after a client close, a slow consumer, a message too big, a flood, an idle timeout, a TCP
 * reset or a shutdown, the hub and `/healthz` counts return to zero (`abuse_harness.ts`).
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import { chatClient, Inbox, rawClient, type TestServer, waitFor, within } from "./helpers.ts";
import {
  assertCounts,
  assertDrained,
  counter,
  disconnects,
  metric,
  serve,
  steadyTraffic,
  type Traffic,
} from "./abuse_harness.ts";
import { closePayload, OP, rawWs } from "./wire.ts";

Deno.test("--idle-timeout 1 drops a peer that never answers pings; a Deno client that does stays", async () => {
  const server = serve({ idleTimeout: 1 });
  try {
    const traffic = await steadyTraffic(server, "/idle");
    // Sends nothing; Deno answers its pings automatically.
    const quiet = await rawClient(server.ws("/idle"));
    const quietFrames = new Inbox<string>();
    quiet.socket.onmessage = (e) => {
      if (!e.data.startsWith("seq:")) quietFrames.push(e.data);
    };
    // Two mute peers in turn, so the quiet client lives through at least two idle periods.
    for (let round = 0; round < 2; round++) {
      const mute = await rawWs(server, "/idle"); // reads and discards; never sends a byte
      assert.equal(await mute.end, "eof", "the server hung up on the mute peer");
      assert.ok(mute.pings >= 1, "it was pinged first");
      assert.deepEqual(mute.closeFrame, { code: 1001, reason: "No response from ping frame." });
      await mute.close();
      await assertCounts(server, 3);
    }
    assert.equal(await metric(server, disconnects("idle")), 2);
    quiet.send("quiet but alive");
    assert.equal(
      await quietFrames.next("the quiet client's own echo"),
      "quiet but alive",
    );
    await quiet.close();
    await traffic.finish();
    assert.deepEqual(traffic.others, ["quiet but alive"]);
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("hub and /healthz counts return to zero after every kind of disconnect", async (t) => {
  const kinds: {
    name: string;
    reason: string;
    config: Partial<Config>;
    traffic?: { payloadBytes?: number; burst?: number; intervalMs?: number };
    disconnect: (server: TestServer, traffic: Traffic) => Promise<void>;
  }[] = [
    {
      name: "client close",
      reason: "client",
      config: {},
      async disconnect(server) {
        const deno = await rawClient(server.ws("/k"));
        const { client: chat } = await chatClient(server.ws("/k"));
        const tcp = await rawWs(server, "/k");
        await assertCounts(server, 5);
        await deno.close();
        await chat.close();
        await tcp.send({ opcode: OP.close, payload: closePayload(1000) });
        await tcp.end;
        await tcp.close();
      },
    },
    {
      name: "slow consumer",
      reason: "slow_consumer",
      config: { maxBufferedBytes: 256 * 1024 },
      traffic: { payloadBytes: 16 * 1024, burst: 8, intervalMs: 0 },
      async disconnect(server) {
        const stalled = await rawWs(server, "/k", { read: false });
        await waitFor(() => counter(server, disconnects("slow_consumer")) === 1, "dropped");
        await stalled.close();
      },
    },
    {
      name: "too big",
      reason: "too_big",
      config: { maxMessageBytes: 1024 },
      async disconnect(server) {
        const big = await rawClient(server.ws("/k"));
        big.send("b".repeat(2000));
        await within(big.closed, "close");
      },
    },
    {
      name: "rate limited",
      reason: "rate_limited",
      config: { rateLimit: 1000, rateBurst: 1000 },
      async disconnect(server) {
        const flooder = await rawClient(server.ws("/k"));
        flooder.socket.onmessage = () => {};
        for (let i = 0; i < 1500; i++) flooder.send(`f${i}`);
        await within(flooder.closed, "close");
      },
    },
    {
      name: "idle",
      reason: "idle",
      config: { idleTimeout: 1 },
      async disconnect(server) {
        const mute = await rawWs(server, "/k");
        await mute.end;
        await mute.close();
      },
    },
    {
      name: "TCP reset",
      reason: "client", // a TCP reset is a client disconnect (1006) to the server
      config: {},
      async disconnect(server, traffic) {
        const tcp = await rawWs(server, "/k", { read: false });
        await waitFor(() => server.hub.membersOf("/k").length === 3, "joined");
        await traffic.advance(3); // ...so the room's messages sit unread in its socket
        // Closing with received bytes still unread makes the kernel send RST, not FIN.
        await tcp.close();
      },
    },
  ];
  for (const kind of kinds) {
    await t.step(kind.name, async () => {
      const server = serve(kind.config);
      try {
        const before = await metric(server, disconnects(kind.reason));
        const traffic = await steadyTraffic(server, "/k", kind.traffic);
        await kind.disconnect(server, traffic);
        await assertCounts(server, 2, 1);
        assert.ok(await metric(server, disconnects(kind.reason)) > before, kind.reason);
        await traffic.advance(5);
        await traffic.finish();
        await assertDrained(server);
      } finally {
        await server.close();
      }
    });
  }

  await t.step("shutdown via server.close()", async () => {
    const server = serve();
    let closed = false;
    try {
      const traffic = await steadyTraffic(server, "/k");
      const { client: chat } = await chatClient(server.ws("/k"));
      const tcp = await rawWs(server, "/k");
      await assertCounts(server, 4);
      await traffic.advance(5);
      await traffic.finish({ keepOpen: true });
      closed = true;
      const closing = server.close();
      // The raw client answers the close frame, as a conforming client would.
      assert.deepEqual(await tcp.closeFrameReceived, {
        code: 1001,
        reason: "server shutting down",
      });
      await tcp.send({ opcode: OP.close, payload: closePayload(1001) });
      await closing;
      assert.equal(server.hub.connections, 0);
      assert.equal(server.hub.rooms, 0);
      assert.equal(counter(server, disconnects("shutdown")), 4);
      for (const c of [traffic.publisher, traffic.subscriber, chat]) {
        assert.deepEqual(await within(c.closed, "close"), {
          code: 1001,
          reason: "server shutting down",
        });
      }
      await tcp.close();
    } finally {
      if (!closed) await server.close();
    }
  });
});
