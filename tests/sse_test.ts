/**
 * The SSE + HTTP transport over real sockets with a plain HTTP client (`tests/sse_client.ts`):
 * the stream's events and ids, resume through `Last-Event-ID`, every answer of `POST /ROOM`,
 * SSE and WebSocket members chatting, and every limit an SSE member obeys.
 * @module
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import {
  chatClient,
  offsetRange,
  startMain,
  startServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { post, sseMember, SseStream } from "./sse_client.ts";
import type { Config } from "../src/config.ts";
import { MAX_TEXT_LENGTH } from "../src/protocol.ts";

const SECRET = "a-test-secret-that-is-long-enough-for-hs256";

async function withServer(
  overrides: Partial<Config>,
  fn: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = startServer(overrides);
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

async function sign(claims: jose.JWTPayload, expiresInSeconds = 3600): Promise<string> {
  return await new jose.SignJWT(claims)
    .setProtectedHeader({ alg: "HS256" })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSeconds)
    .sign(new TextEncoder().encode(SECRET));
}

Deno.test("a stream starts with a welcome carrying a session, then each event as one SSE message with EPOCH:OFFSET ids", async () => {
  await withServer({}, async (server) => {
    const { stream, welcome } = await sseMember(`${server.origin}/lobby?name=ann`);
    const h = stream.response.headers;
    assert.equal(h.get("content-type"), "text/event-stream; charset=utf-8");
    assert.equal(h.get("cache-control"), "no-cache, no-transform");
    assert.equal(h.get("x-accel-buffering"), "no");
    assert.equal(welcome.name, "ann");
    assert.equal(welcome.transport, "sse");
    assert.match(welcome.session, /^[0-9a-f-]+\.[A-Za-z0-9_-]{22}$/);
    const { client: bob, welcome: bobs } = await chatClient(server.ws("/lobby?name=bob"));
    assert.deepEqual(await stream.event("join"), { type: "join", id: bobs.id, name: "bob" });
    bob.say("one");
    bob.say("two");
    const one = await stream.event("message");
    const two = await stream.event("message");
    assert.deepEqual([one.text, two.text], ["one", "two"]);
    assert.equal(one.sseId, `${welcome.epoch}:${one.offset}`);
    assert.equal(two.sseId, `${welcome.epoch}:${two.offset}`);
    assert.equal(two.offset, one.offset + 1);
    await stream.cancel();
    assert.equal((await bob.until("leave")).name, "ann", "a stream that ends leaves at once");
    await bob.close();
  });
});

Deno.test("Last-Event-ID resumes a stream: recovered, with exactly the messages missed, and it wins over ?offset=&epoch=", async () => {
  await withServer({}, async (server) => {
    const { client: bob } = await chatClient(server.ws("/r?name=bob"));
    const { stream, welcome } = await sseMember(`${server.origin}/r`);
    for (const text of ["a", "b", "c"]) bob.say(text);
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push(await stream.until("message"));
    await stream.cancel();
    for (const text of ["d", "e"]) bob.say(text);
    for (let i = 0; i < 5; i++) await bob.until("message");
    const last = seen[1]!; // "b": the client missed "c", "d", "e"
    const resumed = await sseMember(`${server.origin}/r?offset=0&epoch=bogus`, {
      "last-event-id": last.sseId!,
    });
    assert.equal(resumed.welcome.recovered, true);
    assert.equal(resumed.welcome.epoch, welcome.epoch);
    assert.deepEqual(resumed.welcome.history.map((m: { text: string }) => m.text), ["c", "d", "e"]);
    assert.deepEqual(
      resumed.welcome.history.map((m: { offset: number }) => m.offset),
      offsetRange(last.offset, last.offset + 3),
    );
    await resumed.stream.cancel();
    // A malformed Last-Event-ID is ignored: ?offset=&epoch= applies.
    const query = await sseMember(`${server.origin}/r?offset=4&epoch=${welcome.epoch}`, {
      "last-event-id": "not an id",
    });
    assert.equal(query.welcome.recovered, true);
    assert.deepEqual(query.welcome.history.map((m: { text: string }) => m.text), ["e"]);
    await query.stream.cancel();
    await bob.close();
  });
});

Deno.test("POST /ROOM answers 202 and every error code of the WebSocket error event as HTTP errors", async () => {
  await withServer({ maxMessageBytes: 8192, rateLimit: 1, rateBurst: 12 }, async (server) => {
    const url = `${server.origin}/p`;
    const { stream, welcome } = await sseMember(url);
    const session = welcome.session;
    const ok = await post(url, session, { type: "message", text: "hello" });
    assert.equal(ok.status, 202);
    assert.deepEqual(ok.body, {});
    assert.equal((await stream.until("message")).text, "hello");
    const renamed = await post(url, session, { type: "rename", name: "zed" });
    assert.equal(renamed.status, 202);
    assert.equal((await stream.until("rename")).name, "zed");
    for (
      const [body, code] of [
        ["{not json", "invalid_json"],
        [{ type: "message", text: 5 }, "invalid_field"],
        [{ type: "shout", text: "x" }, "unknown_type"],
        [{ type: "message", text: "x".repeat(MAX_TEXT_LENGTH + 1) }, "text_too_long"],
        [{ type: "rename", name: "   " }, "invalid_name"],
      ] as const
    ) {
      const res = await post(url, session, body);
      assert.equal(res.status, 400, code);
      assert.equal(res.body.error.code, code);
    }
    for (const s of [undefined, "nope", `${session}x`]) {
      const res = await post(url, s, { type: "message", text: "x" });
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, "invalid_session");
      assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="chorus"');
    }
    const big = await post(url, session, { type: "message", text: "é".repeat(4100) });
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, "payload_too_large");
    const text = await post(url, session, "hi", { "content-type": "text/plain" });
    assert.equal(text.status, 415);
    assert.equal(text.body.error.code, "unsupported_media_type");
    let limited;
    for (let i = 0; i < 20 && limited === undefined; i++) {
      const res = await post(url, session, { type: "message", text: `m${i}` });
      if (res.status !== 202) limited = res;
    }
    assert.equal(limited?.status, 429, "the member's token bucket runs out");
    assert.equal(limited.body.error.code, "rate_limited");
    await stream.cancel();
    await waitFor(() => server.hub.connections === 0, "the server to see the stream end");
    const ended = await post(url, session, { type: "message", text: "after" });
    assert.equal(ended.status, 401, "a session ends with its stream");
  });
});

Deno.test("a session used from another room is refused with 401", async () => {
  await withServer({}, async (server) => {
    const { stream, welcome } = await sseMember(`${server.origin}/one`);
    const { stream: other } = await sseMember(`${server.origin}/two`);
    const res = await post(`${server.origin}/two`, welcome.session, { type: "message", text: "x" });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "invalid_session");
    await Promise.all([stream.cancel(), other.cancel()]);
  });
});

Deno.test("an SSE member and a WebSocket member chat both ways and see each other's presence", async () => {
  await withServer({}, async (server) => {
    const { client: ws, welcome: wsWelcome } = await chatClient(server.ws("/c?name=wendy"));
    const { stream, welcome } = await sseMember(`${server.origin}/c?name=sam`);
    assert.deepEqual(welcome.members.map((m: { name: string }) => m.name), ["wendy", "sam"]);
    assert.deepEqual(await ws.next("join"), { type: "join", id: welcome.id, name: "sam" });
    assert.equal(
      (await post(`${server.origin}/c`, welcome.session, {
        type: "message",
        text: "from sse",
      })).status,
      202,
    );
    const heard = await ws.next("message");
    assert.deepEqual([heard.text, heard.from], ["from sse", { id: welcome.id, name: "sam" }]);
    ws.say("from ws");
    assert.equal((await stream.until("message")).text, "from sse");
    const back = await stream.until("message");
    assert.deepEqual([back.text, back.from.id], ["from ws", wsWelcome.id]);
    const list = await (await fetch(`${server.origin}/healthz`)).json();
    assert.equal(list.connections, 2);
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    assert.match(metrics, /^chorus_connections\{mode="chat",transport="sse"\} 1$/m);
    assert.match(metrics, /^chorus_connections\{mode="chat",transport="websocket"\} 1$/m);
    await stream.cancel();
    assert.deepEqual(await ws.until("leave"), { type: "leave", id: welcome.id, name: "sam" });
    await ws.close();
  });
});

Deno.test("a GET without Accept: text/event-stream still serves the chat page", async () => {
  await withServer({}, async (server) => {
    const res = await fetch(`${server.origin}/lobby`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
    await res.body?.cancel();
  });
});

Deno.test("the per-IP and global connection limits refuse SSE streams like upgrades", async () => {
  await withServer({ maxConnectionsPerIp: 1 }, async (server) => {
    const { client } = await chatClient(server.ws("/l"));
    const refused = await SseStream.open(`${server.origin}/l`);
    assert.equal(refused.response.status, 429);
    assert.equal((await refused.response.json()).error.code, "too_many_connections");
    assert.equal(refused.response.headers.get("retry-after"), "10");
    await client.close();
  });
  await withServer({ maxConnections: 1 }, async (server) => {
    const { stream } = await sseMember(`${server.origin}/l`);
    const refused = await SseStream.open(`${server.origin}/l`);
    assert.equal(refused.response.status, 503);
    assert.equal((await refused.response.json()).error.code, "too_many_connections");
    await stream.cancel();
  });
});

Deno.test("a stalled SSE reader is closed as a slow consumer with 1008, and its session then 401s", async () => {
  await withServer({ maxBufferedBytes: 64 * 1024 }, async (server) => {
    const { stream, welcome } = await sseMember(`${server.origin}/slow`);
    stream.pause();
    const from = { id: "pub", name: "pub" };
    const text = "x".repeat(4000);
    await waitFor(() => {
      for (let i = 0; i < 64; i++) server.hub.publish("/slow", text, from);
      return server.hub.connections === 0;
    }, "the stalled reader to be dropped");
    const after = await post(`${server.origin}/slow`, welcome.session, {
      type: "message",
      text: "still me?",
    });
    assert.equal(after.status, 401);
    stream.resume();
    assert.deepEqual(await stream.closeEvent(), { code: 1008, reason: "slow consumer" });
    assert.equal(await stream.ended, "end", "the body ends after the close event");
  });
});

Deno.test("JWT rules apply to streams: 401 without a valid token, 403 for a forbidden room, name_locked on rename", async () => {
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const none = await SseStream.open(`${server.origin}/team`);
    assert.equal(none.response.status, 401);
    assert.equal((await none.response.json()).error.code, "invalid_token");
    const bad = await SseStream.open(`${server.origin}/team?token=garbage`);
    assert.equal(bad.response.status, 401);
    await bad.response.body?.cancel();
    const token = await sign({ sub: "ann", name: "Ann", rooms: ["/team"] });
    const forbidden = await SseStream.open(`${server.origin}/other?token=${token}`);
    assert.equal(forbidden.response.status, 403);
    assert.equal((await forbidden.response.json()).error.code, "forbidden_room");
    const { stream, welcome } = await sseMember(`${server.origin}/team?token=${token}`);
    assert.deepEqual([welcome.id, welcome.name], ["ann", "Ann"]);
    const rename = await post(`${server.origin}/team`, welcome.session, {
      type: "rename",
      name: "Bob",
    });
    assert.equal(rename.status, 400);
    assert.equal(rename.body.error.code, "name_locked");
    await stream.cancel();
  });
});

Deno.test('a stream whose token expires ends with the close event 4001 "token expired"', async () => {
  await withServer({ jwtSecret: SECRET, jwtClockSkew: 0 }, async (server) => {
    const token = await sign({ sub: "dave" }, 1);
    const { stream } = await sseMember(`${server.origin}/r?token=${token}`);
    assert.deepEqual(await stream.closeEvent(), { code: 4001, reason: "token expired" });
    assert.equal(await stream.ended, "end");
    assert.equal(server.hub.connections, 0);
  });
});

Deno.test("origins: a foreign origin is refused with 403; an allowed one gets CORS headers and a preflight", async () => {
  const allowed = "https://app.example";
  await withServer({ allowedOrigins: [allowed] }, async (server) => {
    const evil = await SseStream.open(`${server.origin}/o`, { origin: "https://evil.example" });
    assert.equal(evil.response.status, 403);
    assert.equal((await evil.response.json()).error.code, "forbidden_origin");
    const evilPost = await post(`${server.origin}/o`, "x.y", { type: "message", text: "x" }, {
      origin: "https://evil.example",
    });
    assert.equal(evilPost.status, 403);
    const evilPreflight = await fetch(`${server.origin}/o`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example" },
    });
    assert.equal(evilPreflight.status, 403);
    await evilPreflight.body?.cancel();

    const preflight = await fetch(`${server.origin}/o`, {
      method: "OPTIONS",
      headers: {
        origin: allowed,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), allowed);
    assert.equal(preflight.headers.get("access-control-allow-methods"), "GET, POST");
    assert.equal(
      preflight.headers.get("access-control-allow-headers"),
      "authorization, content-type, last-event-id",
    );
    assert.equal(preflight.headers.get("access-control-max-age"), "600");
    assert.equal(preflight.headers.get("vary"), "origin");
    await preflight.body?.cancel();

    const { stream, welcome } = await sseMember(`${server.origin}/o`, { origin: allowed });
    assert.equal(stream.response.headers.get("access-control-allow-origin"), allowed);
    assert.equal(stream.response.headers.get("vary"), "origin");
    const sent = await post(`${server.origin}/o`, welcome.session, { type: "message", text: "x" }, {
      origin: allowed,
    });
    assert.equal(sent.status, 202);
    assert.equal(sent.headers.get("access-control-allow-origin"), allowed);
    const refused = await post(`${server.origin}/o`, "nope", { type: "message", text: "x" }, {
      origin: allowed,
    });
    assert.equal(refused.status, 401);
    assert.equal(
      refused.headers.get("access-control-allow-origin"),
      allowed,
      "errors are readable",
    );
    await stream.cancel();
  });
});

Deno.test("SIGTERM of main.ts ends SSE streams with the close event 1001 and the process exits 0", async () => {
  await using main = await startMain();
  const { stream } = await sseMember(`${main.url}lobby`);
  const { stream: other } = await sseMember(`${main.url}other`);
  main.child.kill("SIGTERM");
  const [a, b, out] = await Promise.all([stream.closeEvent(), other.closeEvent(), main.output()]);
  assert.deepEqual(a, { code: 1001, reason: "server shutting down" });
  assert.deepEqual(b, { code: 1001, reason: "server shutting down" });
  assert.equal(await stream.ended, "end");
  assert.equal(out.code, 0);
});

Deno.test("with --workers 2, an SSE member and WebSocket members on both workers chat", async () => {
  await using main = await startMain(["--workers", "2"]);
  const ws = (path: string) => `ws://127.0.0.1:${main.port}${path}`;
  // Eight members: both workers almost surely get some (the kernel hashes each connection).
  const members = await Promise.all(
    Array.from({ length: 8 }, (_, i) => chatClient(ws(`/w?name=ws${i}`))),
  );
  const nodes = new Set(members.map((m) => m.welcome.id.split("-")[0]));
  const { stream, welcome } = await sseMember(`${main.url}w?name=sse`);
  assert.equal(welcome.count, 9);
  // Each POST on a fresh connection, so some reach the worker without the stream (relayed):
  // without the relay, this fails but for 1 run in 2^(POSTS-1).
  const POSTS = 10;
  for (let i = 0; i < POSTS; i++) {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    const res = await fetch(`${main.url}w`, {
      method: "POST",
      client,
      headers: { authorization: `Bearer ${welcome.session}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "message", text: `sse ${i}` }),
    });
    assert.equal(res.status, 202, await res.text());
    client.close();
  }
  for (const { client } of members) {
    for (let i = 0; i < POSTS; i++) {
      assert.equal((await client.until("message")).text, `sse ${i}`);
    }
  }
  members[0]!.client.say("to sse");
  const texts = [];
  for (let i = 0; i <= POSTS; i++) texts.push((await stream.until("message")).text);
  assert.deepEqual(texts, Array.from({ length: POSTS }, (_, i) => `sse ${i}`).concat("to sse"));
  assert.ok(nodes.size === 2, `WebSocket members on ${nodes.size} worker(s)`);
  main.child.kill("SIGTERM");
  assert.deepEqual(await stream.closeEvent(), { code: 1001, reason: "server shutting down" });
  assert.equal((await main.output()).code, 0);
});
