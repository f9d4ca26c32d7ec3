/**
 * Broken frames over raw TCP (RFC 6455 §5): invalid UTF-8, unmasked frames, reserved opcodes and
 * bits, invalid close codes, partial frames and random bytes remove the offender only, while
 * healthy traffic in the same room loses nothing (`abuse_harness.ts`).
 * @module
 */
import assert from "node:assert/strict";
import { waitFor } from "./helpers.ts";
import {
  assertCounts,
  assertDrained,
  disconnects,
  metric,
  serve,
  steadyTraffic,
} from "./abuse_harness.ts";
import {
  closePayload,
  concat,
  encodeFrame,
  type FrameSpec,
  OP,
  pseudoRandomBytes,
  rawWs,
} from "./wire.ts";

Deno.test("invalid UTF-8 in a text frame removes the offender only; valid UTF-8 split across fragments is fine", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/utf8");
    const invalid = [
      encodeFrame({ opcode: OP.text, payload: new Uint8Array([0x68, 0x69, 0xff, 0xfe]) }),
      concat(
        encodeFrame({ opcode: OP.text, fin: false, payload: "ok" }),
        encodeFrame({ opcode: OP.continuation, payload: new Uint8Array([0xc3, 0x28]) }),
      ),
    ];
    for (const bytes of invalid) {
      const offender = await rawWs(server, "/utf8");
      await assertCounts(server, 3);
      await offender.write(bytes);
      // Deno drops the connection without a close frame (1007 would be the polite answer).
      assert.notEqual(await offender.end, "local");
      assert.ok(
        offender.closeFrame === undefined || offender.closeFrame.code === 1007,
        `close frame: ${JSON.stringify(offender.closeFrame)}`,
      );
      await offender.close();
      await assertCounts(server, 2);
    }
    // "é" split between two fragments, and invalid UTF-8 in a binary frame: both relayed.
    const fine = await rawWs(server, "/utf8");
    await fine.write(concat(
      encodeFrame({
        opcode: OP.text,
        fin: false,
        payload: new Uint8Array([0x63, 0x61, 0x66, 0xc3]),
      }),
      encodeFrame({ opcode: OP.continuation, payload: new Uint8Array([0xa9]) }),
      encodeFrame({ opcode: OP.binary, payload: new Uint8Array([0xff, 0xfe]) }),
    ));
    await waitFor(() => traffic.others.length === 2, "the fine frames relayed");
    assert.equal(traffic.others[0], "café");
    assert.deepEqual(
      new Uint8Array(traffic.others[1] as ArrayBuffer),
      new Uint8Array([0xff, 0xfe]),
    );
    await traffic.advance(20);
    await fine.close();
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("unmasked client frames are accepted and relayed like any frame (Deno does not enforce masking)", async () => {
  // RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame. Deno 2.9.6
  // accepts it, so chorus relays it like a masked one; the offender stays connected. Harmless:
  // masking protects proxies from browser-crafted bytes, and browsers always mask.
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/mask");
    const unmasked = await rawWs(server, "/mask");
    await assertCounts(server, 3);
    await unmasked.send({ opcode: OP.text, payload: "unmasked hello", mask: false });
    assert.equal(
      await unmasked.nextText((t) => t === "unmasked hello", "own echo"),
      "unmasked hello",
    );
    await waitFor(() => traffic.others.includes("unmasked hello"), "relayed to the subscriber");
    await traffic.advance(10);
    assert.equal(unmasked.ended, false);
    await assertCounts(server, 3);
    await unmasked.close();
    await traffic.finish();
    assert.deepEqual(traffic.others, ["unmasked hello"]);
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("reserved opcodes and reserved bits disconnect the offender only", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/reserved");
    const offences: [string, FrameSpec][] = [
      ["opcode 0x3", { opcode: 0x3, payload: "x" }],
      ["opcode 0x7", { opcode: 0x7, payload: "x" }],
      ["opcode 0xB", { opcode: 0xb, payload: "x" }],
      ["opcode 0xF", { opcode: 0xf, payload: "x" }],
      ["RSV1 without an extension", { opcode: OP.text, payload: "x", rsv: 0b100 }],
      ["continuation with nothing to continue", { opcode: OP.continuation, payload: "x" }],
      ["fragmented ping", { opcode: OP.ping, payload: "x", fin: false }],
      ["ping over 125 bytes", { opcode: OP.ping, payload: new Uint8Array(126) }],
    ];
    for (const [what, spec] of offences) {
      const offender = await rawWs(server, "/reserved");
      await assertCounts(server, 3);
      await offender.send(spec);
      assert.notEqual(await offender.end, "local", `${what}: the server hung up`);
      await offender.close();
      await assertCounts(server, 2);
      await traffic.advance(3);
    }
    await traffic.finish();
    assert.deepEqual(traffic.others, [], "nothing of the offenders was relayed");
    await assertDrained(server);
    assert.equal(await metric(server, disconnects("client")), offences.length + 2);
  } finally {
    await server.close();
  }
});

Deno.test("a close frame with an invalid code gets close 1002 and removes the offender only", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/close");
    // 999 is below the range, 1005/1006/1015 must never be on the wire, 1004 is reserved,
    // 5000 is beyond 4999 (RFC 6455 §7.4).
    for (const code of [999, 1004, 1005, 1006, 1015, 5000]) {
      const offender = await rawWs(server, "/close");
      await assertCounts(server, 3);
      await offender.send({ opcode: OP.close, payload: closePayload(code) });
      assert.deepEqual(await offender.closeFrameReceived, { code: 1002, reason: "" }, `${code}`);
      assert.equal(await offender.end, "eof", `${code}: the server hung up after its close`);
      await offender.close();
      await assertCounts(server, 2);
    }
    // A close frame whose payload is one byte, and one whose reason is invalid UTF-8: dropped.
    for (
      const payload of [new Uint8Array([3]), concat(closePayload(1000), new Uint8Array([0xff]))]
    ) {
      const offender = await rawWs(server, "/close");
      await offender.send({ opcode: OP.close, payload });
      assert.notEqual(await offender.end, "local");
      await offender.close();
      await assertCounts(server, 2);
    }
    // A valid code is echoed, as the closing handshake requires.
    const polite = await rawWs(server, "/close");
    await polite.send({ opcode: OP.close, payload: closePayload(4000, "bye") });
    assert.equal((await polite.closeFrameReceived).code, 4000);
    assert.equal(await polite.end, "eof");
    await polite.close();
    await traffic.advance(10);
    await traffic.finish();
    assert.deepEqual(traffic.others, []);
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("a partial frame then silence disturbs nobody; the offender goes when its TCP closes", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/partial");
    const frame = encodeFrame({ opcode: OP.text, payload: "p".repeat(200) });
    const halfPayload = await rawWs(server, "/partial");
    await halfPayload.write(frame.subarray(0, 20)); // header + mask + 12 of 200 payload bytes
    const halfHeader = await rawWs(server, "/partial");
    await halfHeader.write(frame.subarray(0, 1)); // FIN+opcode, no length byte
    await traffic.advance(50);
    await assertCounts(server, 4);
    assert.equal(halfPayload.ended || halfHeader.ended, false, "the server waits for the rest");
    assert.deepEqual(traffic.others, []);

    // A frame trickled in one byte at a time, with traffic in between, is relayed once complete.
    const trickle = await rawWs(server, "/partial");
    for (const byte of encodeFrame({ opcode: OP.text, payload: "trickled" })) {
      await trickle.write(new Uint8Array([byte]));
      await traffic.advance(1);
    }
    await waitFor(() => traffic.others.includes("trickled"), "the trickled frame relayed");

    await halfPayload.close();
    await halfHeader.close();
    await trickle.close();
    await assertCounts(server, 2);
    await traffic.finish();
    assert.deepEqual(traffic.others, ["trickled"]);
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("random bytes after the handshake remove the offender only", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/noise");
    // Random bytes soon make an invalid header (RSV bits, reserved opcode, unmasked length over
    // Deno's 64 MiB cap...). A header may announce up to 64 KiB of payload first, so keep
    // writing 4 KiB chunks until the server hangs up: at most 64 of them.
    for (const seed of [1, 2, 3, 0xc0ffee]) {
      const offender = await rawWs(server, "/noise");
      const noise = pseudoRandomBytes(seed, 64 * 4096);
      for (let i = 0; i < 64 && !offender.ended; i++) {
        if (!await offender.write(noise.subarray(i * 4096, (i + 1) * 4096))) break;
        await traffic.advance(1);
      }
      assert.notEqual(await offender.end, "local", `seed ${seed}: the server hung up`);
      await offender.close();
      await assertCounts(server, 2);
    }
    await traffic.advance(10);
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});
