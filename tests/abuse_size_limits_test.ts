/**
 * Byte limits under abuse: a reader that stops reading cannot make the server buffer without
 * bound (--max-buffered-bytes), and a message over --max-message-bytes never reaches anyone,
 * not even the frames pipelined behind it. Healthy traffic runs throughout (`abuse_harness.ts`).
 * @module
 */
import assert from "node:assert/strict";
import { chatClient, rawClient, waitFor, within } from "./helpers.ts";
import {
  assertCounts,
  assertDrained,
  counter,
  disconnects,
  metric,
  MiB,
  serve,
  steadyTraffic,
} from "./abuse_harness.ts";
import { concat, encodeFrame, OP, rawWs } from "./wire.ts";

Deno.test("a reader that stops reading is dropped as a slow consumer; the healthy subscriber loses nothing", async () => {
  const server = serve({ maxBufferedBytes: 256 * 1024 });
  try {
    // Upgrades, then never reads: the kernel buffers fill (a few MiB on loopback), then Deno's
    // queue (bufferedAmount) grows past --max-buffered-bytes.
    const stalled = await rawWs(server, "/flood", { read: false });
    await waitFor(() => server.hub.membersOf("/flood").length === 1, "stalled reader joined");
    const rssBefore = Deno.memoryUsage().rss;
    // Bursts of 8 × 16 KiB = 128 KiB: bufferedAmount counts every byte queued in one event-loop
    // turn before Deno writes any of it, so a burst over --max-buffered-bytes (256 KiB) would
    // drop the healthy subscriber too.
    const traffic = await steadyTraffic(server, "/flood", {
      payloadBytes: 16 * 1024,
      burst: 8,
      intervalMs: 0,
    });
    await waitFor(
      () => counter(server, disconnects("slow_consumer")) >= 1,
      "slow consumer dropped",
    );
    await assertCounts(server, 2, 1);
    await traffic.advance(64); // the flood goes on for the healthy subscriber after the drop
    // The server runs in this process, so its RSS is ours. Bound: 200 MiB. The stalled socket
    // may hold at most --max-buffered-bytes (256 KiB) in Deno's queue plus what the kernel
    // buffers (outside the heap); the rest of the growth is the healthy clients' 16 KiB strings
    // awaiting GC. Unbounded buffering would instead grow with the flood (hundreds of MiB).
    const growth = Deno.memoryUsage().rss - rssBefore;
    assert.ok(growth < 200 * MiB, `RSS grew by ${(growth / MiB).toFixed(1)} MiB`);
    await traffic.finish();
    assert.equal(traffic.others.length, 0);

    // Reading now, the stalled client finds what was buffered, then the 1008 close frame.
    stalled.startReading();
    assert.deepEqual(await stalled.closeFrameReceived, { code: 1008, reason: "slow consumer" });
    await stalled.close();
    await assertDrained(server);
    assert.equal(await metric(server, disconnects("slow_consumer")), 1);
  } finally {
    await server.close();
  }
});

Deno.test("a message over --max-message-bytes closes its sender with 1009; a message at the limit is relayed", async () => {
  const server = serve({ maxMessageBytes: 1024 });
  try {
    const traffic = await steadyTraffic(server, "/big");
    const atLimit = "L".repeat(1024);
    const edge = await rawClient(server.ws("/big"));
    edge.socket.onmessage = () => {};
    edge.send(atLimit);
    await waitFor(() => traffic.others.includes(atLimit), "the 1024-byte message relayed");

    // Raw TCP, 16-bit payload length.
    const tcp16 = await rawWs(server, "/big");
    await tcp16.send({ opcode: OP.text, payload: "x".repeat(1025) });
    assert.deepEqual(await tcp16.closeFrameReceived, { code: 1009, reason: "message too big" });
    await assertCounts(server, 3);
    // Raw TCP, 64-bit payload length.
    const tcp64 = await rawWs(server, "/big");
    await tcp64.send({ opcode: OP.binary, payload: new Uint8Array(70_000) });
    assert.deepEqual(await tcp64.closeFrameReceived, { code: 1009, reason: "message too big" });
    await assertCounts(server, 3);
    // A Deno WebSocket client in raw mode.
    const raw = await rawClient(server.ws("/big"));
    raw.send(new Uint8Array(2000));
    assert.deepEqual(await within(raw.closed, "close"), { code: 1009, reason: "message too big" });
    // A chorus.v1 client.
    const { client: chat } = await chatClient(server.ws("/big"));
    chat.say("c".repeat(1500));
    assert.deepEqual(await within(chat.closed, "close"), { code: 1009, reason: "message too big" });
    await assertCounts(server, 3);

    await traffic.advance(20);
    // The server waits for a close reply these clients never send (RFC 6455 §7.1.1): they end
    // the TCP connection themselves.
    await tcp16.close();
    await tcp64.close();
    await edge.close();
    await traffic.finish();
    assert.deepEqual(traffic.others, [atLimit], "no oversized message was relayed");
    await assertDrained(server);
    assert.equal(await metric(server, disconnects("too_big")), 4);
  } finally {
    await server.close();
  }
});

Deno.test("frames pipelined behind an oversized message are not relayed once its sender is dropped", async () => {
  // The server must not relay anything more from a member it dropped, even frames it had
  // already received. Deno 2.9.6, seeing data frames right behind the frame that made the
  // server close, ends the TCP connection without writing the 1009 close frame at all.
  const server = serve({ maxMessageBytes: 1024 });
  try {
    const traffic = await steadyTraffic(server, "/pipe");
    const offender = await rawWs(server, "/pipe");
    await offender.write(concat(
      encodeFrame({ opcode: OP.text, payload: "x".repeat(2000) }),
      encodeFrame({ opcode: OP.text, payload: "after the drop 1" }),
      encodeFrame({ opcode: OP.binary, payload: "after the drop 2" }),
    ));
    assert.notEqual(await offender.end, "local", "the server hung up");
    assert.ok(
      offender.closeFrame === undefined || offender.closeFrame.code === 1009,
      `close frame: ${JSON.stringify(offender.closeFrame)}`,
    );
    await offender.close();
    assert.equal(await metric(server, disconnects("too_big")), 1);
    await traffic.advance(20);
    await traffic.finish();
    assert.deepEqual(traffic.others, [], "nothing from the dropped sender was relayed");
    await assertDrained(server);
  } finally {
    await server.close();
  }
});
