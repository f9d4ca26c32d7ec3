/**
 * Connection limits under a flood: --max-connections and --max-connections-per-ip refuse
 * before any socket exists, count each address separately, and a dropped peer that never
 * answers the close frame cannot hold connections past the limit (`abuse_harness.ts`).
 * @module
 */
import assert from "node:assert/strict";
import { waitFor } from "./helpers.ts";
import {
  assertCounts,
  assertDrained,
  metric,
  refusals,
  serve,
  steadyTraffic,
} from "./abuse_harness.ts";
import { OP, rawExchange, type RawWs, rawWs, upgradeRequest } from "./wire.ts";

/** Whether this machine can reach one dual-stack listener from 127.0.0.1 and from ::1. */
async function probeDualStack(): Promise<boolean> {
  let listener: Deno.Listener | undefined;
  try {
    listener = Deno.listen({ hostname: "::", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const seen: string[] = [];
    for (const hostname of ["127.0.0.1", "::1"]) {
      const client = await Deno.connect({ hostname, port });
      const accepted = await listener.accept();
      seen.push((accepted.remoteAddr as Deno.NetAddr).hostname);
      accepted.close();
      client.close();
    }
    return seen[0] !== seen[1];
  } catch {
    return false;
  } finally {
    listener?.close();
  }
}

/**
 * 127.0.0.2 is no second address here: Linux picks 127.0.0.1 as the source of a connection to
 * any 127/8 address. A dual-stack listener on "::" tells 127.0.0.1 (::ffff:127.0.0.1) from ::1.
 */
const DUAL_STACK = await probeDualStack();

Deno.test("--max-connections 5 refuses the 6th and a 50-connection flood with 503 before any socket exists", async () => {
  const server = serve({ maxConnections: 5 });
  try {
    const traffic = await steadyTraffic(server, "/full");
    const extra: RawWs[] = [];
    for (let i = 0; i < 3; i++) extra.push(await rawWs(server, "/full"));
    await assertCounts(server, 5);

    const sixth = await rawExchange(server.port, upgradeRequest(server.port, { path: "/full" }));
    assert.equal(sixth.status, 503);
    assert.equal(JSON.parse(sixth.body).error.code, "too_many_connections");
    assert.equal(sixth.headers.get("retry-after"), "10");
    assert.equal(server.hub.connections, 5);

    const flood = await Promise.all(
      Array.from(
        { length: 50 },
        () => rawExchange(server.port, upgradeRequest(server.port, { path: "/full" })),
      ),
    );
    assert.deepEqual(flood.map((r) => r.status), new Array(50).fill(503));
    await assertCounts(server, 5);
    assert.equal(await metric(server, refusals("max_connections")), 51);
    await traffic.advance(10);

    // A freed slot is usable again.
    await extra.pop()!.close();
    await assertCounts(server, 4);
    extra.push(await rawWs(server, "/full"));
    await assertCounts(server, 5);
    for (const ws of extra) await ws.close();
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("--max-connections-per-ip 3 refuses a 4th connection and a flood from one address with 429", async () => {
  const server = serve({ maxConnectionsPerIp: 3 });
  try {
    const traffic = await steadyTraffic(server, "/ip");
    const third = await rawWs(server, "/ip");
    await assertCounts(server, 3);
    const fourth = await rawExchange(server.port, upgradeRequest(server.port, { path: "/ip" }));
    assert.equal(fourth.status, 429);
    assert.equal(JSON.parse(fourth.body).error.code, "too_many_connections");
    assert.equal(fourth.headers.get("retry-after"), "10");
    const flood = await Promise.all(
      Array.from(
        { length: 50 },
        () => rawExchange(server.port, upgradeRequest(server.port, { path: "/ip" })),
      ),
    );
    assert.deepEqual(flood.map((r) => r.status), new Array(50).fill(429));
    await assertCounts(server, 3);
    assert.equal(await metric(server, refusals("max_connections_per_ip")), 51);
    await traffic.advance(10);
    await third.close();
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test({
  name: "the per-IP limit counts each address separately: ::1 gets in while 127.0.0.1 is full",
  ignore: !DUAL_STACK,
  async fn() {
    const server = serve({ maxConnectionsPerIp: 3, hostname: "::" });
    try {
      const traffic = await steadyTraffic(server, "/ip"); // from 127.0.0.1 (::ffff:127.0.0.1)
      const third = await rawWs(server, "/ip");
      const refused = await rawExchange(server.port, upgradeRequest(server.port, { path: "/ip" }));
      assert.equal(refused.status, 429);
      const v6: RawWs[] = [];
      for (let i = 0; i < 3; i++) v6.push(await rawWs(server, "/ip", { hostname: "::1" }));
      await assertCounts(server, 6);
      const v6Fourth = await rawExchange(
        server.port,
        upgradeRequest(server.port, { path: "/ip", host: `[::1]:${server.port}` }),
        { hostname: "::1" },
      );
      assert.equal(v6Fourth.status, 429);
      await v6[0]!.send({ opcode: OP.text, payload: "from ::1" });
      await waitFor(() => traffic.others.includes("from ::1"), "the ::1 client's message");
      for (const ws of [third, ...v6]) await ws.close();
      await traffic.finish();
      await assertDrained(server);
    } finally {
      await server.close();
    }
  },
});

Deno.test("a dropped peer that never answers the close frame cannot hold connections past --max-connections", async () => {
  // The hub frees a dropped socket's slot at once, but Deno keeps the TCP connection open until
  // the peer answers the close frame, and never times that out (idleTimeout no longer applies
  // once the socket is CLOSING). A client that sends one oversized message and then ignores the
  // close therefore holds a server connection forever without counting against any limit.
  const server = serve({ maxConnections: 4, maxMessageBytes: 1024, idleTimeout: 1 });
  try {
    const traffic = await steadyTraffic(server, "/linger");
    const held: RawWs[] = [];
    let refused = 0;
    for (let i = 0; i < 8; i++) {
      const res = await rawExchange(server.port, upgradeRequest(server.port, { path: "/linger" }));
      if (res.status !== 101) {
        assert.equal(res.status, 503);
        refused++;
        continue;
      }
      const ws = res.ws!;
      await ws.send({ opcode: OP.text, payload: "x".repeat(2000) });
      assert.equal((await ws.closeFrameReceived).code, 1009);
      held.push(ws); // ...and never answer the close frame
    }
    await traffic.advance(10);
    // Either the lingering connections still count (refused ≥ 6, at most 2 held), or the server
    // gives up on an unanswered close after a grace period (each held connection ends).
    const stillOpen = () => held.filter((ws) => !ws.ended).length;
    await waitFor(() => stillOpen() <= 2, "at most 2 lingering connections", 3000).catch(
      (err) => {
        throw new Error(
          `${err.message}: ${held.length} of 8 upgrades accepted under --max-connections 4 ` +
            `(${refused} refused), ${stillOpen()} still held open by the server`,
        );
      },
    );
    for (const ws of held) await ws.close();
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});
