/**
 * Refused upgrades: malformed upgrade requests written by hand and foreign Origins get a 4xx
 * before any socket exists, and the server keeps serving the healthy traffic
 * (`abuse_harness.ts`).
 * @module
 */
import assert from "node:assert/strict";
import { rawClient, type TestServer, waitFor } from "./helpers.ts";
import {
  assertCounts,
  assertDrained,
  metric,
  refusals,
  serve,
  steadyTraffic,
} from "./abuse_harness.ts";
import { rawExchange, type RawResponse, upgradeRequest } from "./wire.ts";

Deno.test("malformed upgrade requests over raw TCP get 4xx, create no socket, and the server keeps serving", async () => {
  const server = serve();
  try {
    const traffic = await steadyTraffic(server, "/up");
    const p = server.port;
    const json = (res: RawResponse) => JSON.parse(res.body).error.code;

    const noKey = await rawExchange(
      p,
      upgradeRequest(p, { path: "/up", headers: { "sec-websocket-key": null } }),
    );
    assert.equal(noKey.status, 400);
    assert.equal(json(noKey), "bad_request");

    const v8 = await rawExchange(
      p,
      upgradeRequest(p, { path: "/up", headers: { "sec-websocket-version": "8" } }),
    );
    assert.equal(v8.status, 426);
    assert.equal(json(v8), "unsupported_version");
    assert.equal(v8.headers.get("sec-websocket-version"), "13");

    const post = await rawExchange(p, upgradeRequest(p, { path: "/up", method: "POST" }));
    assert.equal(post.status, 405);
    assert.equal(json(post), "method_not_allowed");
    assert.equal(post.headers.get("allow"), "GET");

    // With a body length, Deno's HTTP layer itself refuses an upgrade (400, empty body) before
    // the handler runs, so it is not counted in chorus_upgrades_refused_total.
    const postBody = await rawExchange(
      p,
      upgradeRequest(p, { path: "/up", method: "POST", headers: { "content-length": "0" } }),
    );
    assert.equal(postBody.status, 400);

    // Header limits belong to Deno's HTTP layer: one 100 KiB header or 200 headers get an
    // empty 400 and the connection is closed.
    const huge = await rawExchange(
      p,
      upgradeRequest(p, { path: "/up", headers: { "x-huge": "a".repeat(100 * 1024) } }),
    );
    assert.equal(huge.status, 400);
    assert.equal(huge.body, "");
    const many: Record<string, string> = {};
    for (let i = 0; i < 200; i++) many[`x-h${i}`] = "v";
    const manyHeaders = await rawExchange(p, upgradeRequest(p, { path: "/up", headers: many }));
    assert.equal(manyHeaders.status, 400);

    const garbage = await rawExchange(p, "\x16\x03\x01\x02\x00 not http at all\r\n\r\n");
    assert.equal(garbage.status, 400);

    // Upgrade without "Connection: Upgrade": Deno.upgradeWebSocket refuses it, chorus says 400.
    const noConnection = await rawExchange(
      p,
      upgradeRequest(p, { path: "/up", headers: { connection: null } }),
    );
    assert.equal(noConnection.status, 400);
    assert.equal(json(noConnection), "bad_request");

    await assertCounts(server, 2);
    assert.equal(await metric(server, refusals("bad_request")), 4);
    // Still serving: a new client joins and hears the traffic.
    const late = await rawClient(server.ws("/up"));
    late.send("still here");
    await waitFor(() => traffic.others.includes("still here"), "a late client's message");
    await late.close();
    await traffic.advance(10);
    await traffic.finish();
    await assertDrained(server);
  } finally {
    await server.close();
  }
});

Deno.test("Origin: no header or same host is allowed, others get 403 unless --allowed-origins lists them or is *", async () => {
  const attempt = async (server: TestServer, origin: string | null): Promise<number> => {
    const res = await rawExchange(
      server.port,
      upgradeRequest(server.port, { path: "/o", headers: { origin } }),
    );
    if (res.status === 403) assert.equal(JSON.parse(res.body).error.code, "forbidden_origin");
    await res.ws?.close();
    return res.status;
  };

  const sameHostOnly = serve();
  try {
    const traffic = await steadyTraffic(sameHostOnly, "/o");
    const self = `http://127.0.0.1:${sameHostOnly.port}`;
    const cases: [string | null, number][] = [
      [null, 101],
      [self, 101],
      ["http://evil.example", 403],
      ["https://app.example", 403],
      ["null", 403],
      [`http://127.0.0.1:${sameHostOnly.port}@evil.example`, 403],
      ["http://127.0.0.1:1", 403],
      ["not a url", 403],
    ];
    for (const [origin, status] of cases) {
      assert.equal(await attempt(sameHostOnly, origin), status, `Origin: ${origin}`);
    }
    assert.equal(await metric(sameHostOnly, refusals("bad_origin")), 6);
    await traffic.advance(10);
    await traffic.finish();
    await assertDrained(sameHostOnly);
  } finally {
    await sameHostOnly.close();
  }

  const listed = serve({ allowedOrigins: ["https://app.example"] });
  try {
    assert.equal(await attempt(listed, "https://app.example"), 101);
    assert.equal(await attempt(listed, `http://127.0.0.1:${listed.port}`), 101);
    assert.equal(await attempt(listed, "http://app.example"), 403);
    assert.equal(await attempt(listed, "https://app.example.evil.example"), 403);
    assert.equal(await attempt(listed, "http://evil.example"), 403);
    await assertDrained(listed);
  } finally {
    await listed.close();
  }

  const any = serve({ allowedOrigins: "*" });
  try {
    assert.equal(await attempt(any, "http://evil.example"), 101);
    assert.equal(await attempt(any, "null"), 101);
    await assertDrained(any);
  } finally {
    await any.close();
  }
});
