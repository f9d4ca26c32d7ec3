/**
 * The operator's endpoints under `/api/admin/` on one process, over real HTTP and real
 * sockets: who may call them (key, origin), the stats stream, the room list with 1,000 rooms,
 * disconnecting a member and closing a room on both transports, the operator's publish, and
 * every refusal at the edge. `tests/admin_cluster_test.ts` covers `--workers` and Redis.
 */
import assert from "node:assert/strict";
import { MAX_ADMIN_STREAMS } from "../src/admin_streams.ts";
import { closeAction } from "../static/chorus.js";
import {
  type ChatClient,
  chatClient,
  type Event,
  rawClient,
  startServer,
  type TestServer,
  waitFor,
  within,
} from "./helpers.ts";
import { sseMember, SseStream } from "./sse_client.ts";

const KEY = "admin-api-key-0123456789";
const AUTH = { authorization: `Bearer ${KEY}` };

async function withAdmin(
  fn: (server: TestServer) => Promise<void>,
  overrides: Parameters<typeof startServer>[0] = {},
): Promise<void> {
  const server = startServer({ apiKey: KEY, ...overrides });
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

/** POST a JSON control with the key; the status and the JSON answer. */
async function control(
  server: TestServer,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Event }> {
  const res = await fetch(`${server.origin}/api/admin/${path}`, {
    method: "POST",
    headers: { ...AUTH, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Open the stats stream with the key. */
function statsStream(server: TestServer): Promise<SseStream> {
  return SseStream.open(`${server.origin}/api/admin/stream`, AUTH);
}

/** The next `stats` event of a stream, parsed. */
async function nextStats(stream: SseStream): Promise<Event> {
  const m = await stream.next("a stats event");
  assert.equal(m.event, "stats");
  return JSON.parse(m.data!);
}

/** Line `i` of the server's log with message `msg`, parsed; fails when there is none. */
function logged(server: TestServer, msg: string, i = 0): Event {
  const line = server.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === msg)[i];
  assert.ok(line, `log line ${i} "${msg}"`);
  return line;
}

const ENDPOINTS: [string, string][] = [
  ["GET", "stream"],
  ["GET", "rooms"],
  ["POST", "disconnect"],
  ["POST", "close-room"],
  ["POST", "publish"],
];

Deno.test("without --api-key every admin endpoint is 404", async () => {
  const server = startServer();
  try {
    for (const [method, path] of ENDPOINTS) {
      const res = await fetch(`${server.origin}/api/admin/${path}`, { method, headers: AUTH });
      assert.equal(res.status, 404, path);
      assert.equal((await res.json()).error.code, "not_found");
    }
  } finally {
    await server.close();
  }
});

Deno.test("a missing or wrong key is 401 on every admin endpoint, and never cached", async () => {
  await withAdmin(async (server) => {
    for (const [method, path] of ENDPOINTS) {
      for (const headers of [{}, { authorization: "Bearer wrong-key-0123456789" }]) {
        const res = await fetch(`${server.origin}/api/admin/${path}`, { method, headers });
        assert.equal(res.status, 401, `${method} ${path}`);
        assert.equal(res.headers.get("cache-control"), "no-store");
        assert.equal((await res.json()).error.code, "unauthorized");
      }
    }
  });
});

Deno.test("a request from another origin is 403 forbidden_origin even with the key", async () => {
  await withAdmin(async (server) => {
    for (const origin of ["http://evil.example", "null", `http://localhost:${server.port}`]) {
      for (const [method, path] of ENDPOINTS) {
        const res = await fetch(`${server.origin}/api/admin/${path}`, {
          method,
          headers: { ...AUTH, origin },
        });
        assert.equal(res.status, 403, `${origin} ${path}`);
        assert.equal(res.headers.get("access-control-allow-origin"), null);
        assert.equal((await res.json()).error.code, "forbidden_origin");
      }
    }
    // Its own origin, as a browser's same-origin POST sends it, is served.
    const own = await fetch(`${server.origin}/api/admin/rooms`, {
      headers: { ...AUTH, origin: server.origin },
    });
    assert.equal(own.status, 200);
    assert.equal(own.headers.get("cache-control"), "no-store");
    assert.deepEqual(await own.json(), { rooms: [] });
  });
});

Deno.test("the stats stream starts at once with one node, and its counters follow traffic", async () => {
  await withAdmin(async (server) => {
    const stream = await statsStream(server);
    assert.equal(stream.response.status, 200);
    assert.match(stream.response.headers.get("content-type")!, /^text\/event-stream/);
    assert.match(stream.response.headers.get("cache-control")!, /no-store/);
    const first = await nextStats(stream);
    assert.ok(Math.abs(first.ts - Date.now()) < 5000);
    assert.equal(first.nodes.length, 1);
    const [node] = first.nodes;
    assert.equal(node.node, server.hub.node);
    assert.equal(node.label, `instance ${server.hub.node}`);
    const zero = { connections: { raw: 0, chat: 0, sse: 0 }, received: 0, delivered: 0 };
    assert.deepEqual({ ...node, node: undefined, label: undefined }, {
      ...zero,
      node: undefined,
      label: undefined,
      bytesOut: 0,
      rooms: 0,
    });
    assert.deepEqual(first.total, { ...zero, bytesOut: 0, rooms: 0 });
    assert.equal(first.disconnects.kicked, 0);
    assert.equal(first.disconnects.room_closed, 0);
    assert.equal(first.refused.bad_origin, 0);

    const { client } = await chatClient(server.ws("/busy?name=Ann"));
    const raw = await rawClient(server.ws("/busy"));
    client.say("hello");
    assert.equal(await raw.text(), "hello");
    await raw.close();
    let stats = first;
    while (stats.total.received < 1 || stats.disconnects.client < 1) {
      stats = await nextStats(stream);
    }
    assert.deepEqual(stats.total.connections, { raw: 0, chat: 1, sse: 0 });
    assert.equal(stats.total.rooms, 1);
    assert.equal(stats.nodes[0].rooms, 1);
    assert.ok(stats.total.delivered >= 3, "welcome, join, message");
    assert.ok(stats.total.bytesOut > 0);
    assert.deepEqual(stats.nodes[0].connections, stats.total.connections);
    await client.close();
    await stream.cancel();
  });
});

Deno.test(`at most ${MAX_ADMIN_STREAMS} stats streams are open at once; one that ends frees its place`, async () => {
  await withAdmin(async (server) => {
    const open = await Promise.all(
      Array.from({ length: MAX_ADMIN_STREAMS }, () => statsStream(server)),
    );
    for (const s of open) assert.equal(s.response.status, 200);
    const refused = await fetch(`${server.origin}/api/admin/stream`, { headers: AUTH });
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, "too_many_connections");
    await open.pop()!.cancel();
    let again: SseStream | undefined;
    await waitFor(async () => {
      const s = await statsStream(server);
      if (s.response.status === 200) again = s;
      else await s.response.body?.cancel();
      return again !== undefined;
    }, "a place is free again");
    await Promise.all([...open, again!].map((s) => s.cancel()));
  });
});

Deno.test("the stats stream ends when the server shuts down", async () => {
  const server = startServer({ apiKey: KEY });
  const stream = await statsStream(server);
  await nextStats(stream);
  await server.close();
  assert.equal(await within(stream.ended, "the stream's end"), "end");
});

Deno.test("the room list has every one of 1,000 rooms with its members, offset and activity", async () => {
  await withAdmin(async (server) => {
    const n = 1000;
    const before = Date.now();
    const clients = await Promise.all(
      Array.from({ length: n }, (_, i) => rawClient(server.ws(`/r/${i}`))),
    );
    const extra = await rawClient(server.ws("/r/7"));
    await waitFor(
      () => server.hub.rooms === n && server.hub.clusterConnections === n + 1,
      "all in",
    );
    for (const i of [7, 7, 500]) {
      const res = await fetch(`${server.origin}/api/publish?room=/r/${i}`, {
        method: "POST",
        headers: { ...AUTH, "content-type": "text/plain" },
        body: `to ${i}`,
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
    }
    assert.equal(await extra.text(), "to 7");
    assert.equal(await extra.text(), "to 7");
    assert.equal(await clients[500]!.text(), "to 500");
    const started = performance.now();
    const res = await fetch(`${server.origin}/api/admin/rooms`, { headers: AUTH });
    const { rooms } = await res.json();
    const ms = performance.now() - started;
    assert.equal(rooms.length, n);
    const byName = new Map(rooms.map((r: Event) => [r.room, r]));
    assert.deepEqual([...byName.keys()], [...byName.keys()].sort(), "sorted by path");
    const r7 = byName.get("/r/7") as Event;
    assert.equal(r7.members, 2);
    assert.equal(r7.offset, 2);
    assert.equal((byName.get("/r/500") as Event).offset, 1);
    assert.equal((byName.get("/r/1") as Event).offset, 0);
    for (const r of rooms) {
      assert.ok(r.lastActivity >= before && r.lastActivity <= Date.now(), r.room);
    }
    assert.ok(ms < 2000, `the list of 1,000 rooms took ${ms.toFixed(0)} ms`);
    await Promise.all([...clients, extra].map((c) => c.close()));
  }, { maxConnectionsPerIp: 2000 });
});

/** A chat member over WebSocket and one over SSE in `room`, and a bystander in each room. */
async function members(server: TestServer, room: string) {
  const ws = await chatClient(server.ws(`${room}?name=Wes`));
  const sse = await sseMember(`${server.origin}${room}?name=Sue`);
  const stay = await chatClient(server.ws(`${room}?name=Stay`));
  await ws.client.until("join");
  await ws.client.until("join");
  return { ws, sse, stay };
}

/** Wait until `client` hears `name` leave. */
async function hearsLeave(client: ChatClient, name: string): Promise<void> {
  for (;;) {
    const e = await client.until("leave");
    if (e.name === name) return;
  }
}

Deno.test("disconnect closes the member's WebSocket and SSE stream with 4003, and no one else", async () => {
  await withAdmin(async (server) => {
    const { ws, sse, stay } = await members(server, "/x");
    const kicked = await control(server, "disconnect", { room: "/x", id: ws.welcome.id });
    assert.deepEqual(kicked, { status: 200, body: { disconnected: 1, relayed: false } });
    assert.deepEqual(await ws.client.closed, { code: 4003, reason: "disconnected by operator" });
    await hearsLeave(stay.client, "Wes");

    const reason = "spam, see ticket #12 ✓";
    const again = await control(server, "disconnect", { room: "/x", id: sse.welcome.id, reason });
    assert.deepEqual(again.body, { disconnected: 1, relayed: false });
    assert.deepEqual(await sse.stream.closeEvent(), { code: 4003, reason });
    await hearsLeave(stay.client, "Sue");

    // The bystander is still in the room and hears it.
    stay.client.say("still here");
    assert.equal((await stay.client.until("message")).text, "still here");
    const line = logged(server, "admin disconnect");
    assert.equal(line.level, "info");
    assert.equal(line.ip, "127.0.0.1");
    assert.equal(line.room, "/x");
    assert.equal(line.id, ws.welcome.id);
    assert.equal(logged(server, "admin disconnect", 1).reason, reason);
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    assert.match(metrics, /^chorus_disconnects_total\{reason="kicked"\} 2$/m);
    // A member who is gone is not found.
    const gone = await control(server, "disconnect", { room: "/x", id: ws.welcome.id });
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, "member_not_found");
    await stay.client.close();
  });
});

Deno.test("close-room closes every member of the room with 4004, and no other room", async () => {
  await withAdmin(async (server) => {
    const { ws, sse, stay } = await members(server, "/doomed");
    const other = await chatClient(server.ws("/safe?name=Other"));
    const closed = await control(server, "close-room", { room: "/doomed" });
    assert.deepEqual(closed, { status: 200, body: { disconnected: 3, relayed: false } });
    const frame = { code: 4004, reason: "room closed by operator" };
    assert.deepEqual(await ws.client.closed, frame);
    assert.deepEqual(await stay.client.closed, frame);
    assert.deepEqual(await sse.stream.closeEvent(), frame);
    other.client.say("unaffected");
    assert.equal((await other.client.until("message")).text, "unaffected");
    const line = logged(server, "admin close room");
    assert.deepEqual([line.level, line.ip, line.room, line.disconnected], [
      "info",
      "127.0.0.1",
      "/doomed",
      3,
    ]);
    const empty = await control(server, "close-room", { room: "/doomed" });
    assert.equal(empty.status, 404);
    assert.equal(empty.body.error.code, "room_not_found");
    await other.client.close();
  });
});

Deno.test("the operator's publish reaches members through the publish path and is logged", async () => {
  await withAdmin(async (server) => {
    const { client } = await chatClient(server.ws("/news?name=Reader"));
    const res = await fetch(`${server.origin}/api/admin/publish?room=/news&name=ops`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "text/plain", origin: server.origin },
      body: "maintenance at noon",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.deepEqual((await res.json()).offset, 1);
    const m = await client.until("message");
    assert.deepEqual([m.text, m.from, m.offset], [
      "maintenance at noon",
      { id: "server", name: "ops" },
      1,
    ]);
    const line = logged(server, "admin publish");
    assert.deepEqual([line.level, line.ip, line.room, line.name, line.offset], [
      "info",
      "127.0.0.1",
      "/news",
      "ops",
      1,
    ]);
    await client.close();
  });
});

Deno.test("controls refuse bad requests at the edge with stable codes", async () => {
  await withAdmin(async (server) => {
    const { client, welcome } = await chatClient(server.ws("/edge"));
    const cases: [string, unknown, number, string][] = [
      ["disconnect", "{not json", 400, "invalid_json"],
      ["disconnect", "[1]", 400, "invalid_json"],
      ["disconnect", { id: welcome.id }, 400, "invalid_room"],
      ["disconnect", { room: "edge", id: welcome.id }, 400, "invalid_room"],
      ["disconnect", { room: "/a/../b", id: welcome.id }, 400, "invalid_room"],
      ["disconnect", { room: "/edge" }, 400, "invalid_id"],
      ["disconnect", { room: "/edge", id: 7 }, 400, "invalid_id"],
      ["disconnect", { room: "/edge", id: "a\nb" }, 400, "invalid_id"],
      [
        "disconnect",
        { room: "/edge", id: welcome.id, reason: "x".repeat(101) },
        400,
        "invalid_reason",
      ],
      [
        "disconnect",
        { room: "/edge", id: welcome.id, reason: "é".repeat(62) },
        400,
        "invalid_reason",
      ],
      ["disconnect", { room: "/edge", id: welcome.id, reason: "a\nb" }, 400, "invalid_reason"],
      ["disconnect", { room: "/edge", id: "nobody" }, 404, "member_not_found"],
      ["close-room", { room: 5 }, 400, "invalid_room"],
      ["close-room", { room: "/empty" }, 404, "room_not_found"],
      ["close-room", { room: "/edge", reason: ["x"] }, 400, "invalid_reason"],
    ];
    for (const [path, body, status, code] of cases) {
      const res = await control(server, path, body);
      assert.deepEqual([res.status, res.body.error?.code], [status, code], JSON.stringify(body));
    }
    const big = await control(server, "close-room", { room: "/edge", pad: "x".repeat(5000) });
    assert.deepEqual([big.status, big.body.error.code], [413, "payload_too_large"]);
    const form = await control(server, "close-room", "room=/edge", {
      "content-type": "application/x-www-form-urlencoded",
    });
    assert.deepEqual([form.status, form.body.error.code], [415, "unsupported_media_type"]);
    const wrong: [string, string, string][] = [
      ["GET", "disconnect", "POST"],
      ["POST", "stream", "GET"],
      ["DELETE", "rooms", "GET"],
      ["GET", "close-room", "POST"],
      ["GET", "publish", "POST"],
    ];
    for (
      const [method, path, allow] of wrong
    ) {
      const res = await fetch(`${server.origin}/api/admin/${path}`, { method, headers: AUTH });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get("allow"), allow);
      assert.equal((await res.json()).error.code, "method_not_allowed");
    }
    const unknown = await fetch(`${server.origin}/api/admin/nope`, { headers: AUTH });
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
    // None of it touched the member.
    client.say("untouched");
    assert.equal((await client.until("message")).text, "untouched");
    await client.close();
  });
});

Deno.test("the client library does not reconnect after an operator's 4003 or 4004", () => {
  assert.equal(closeAction(4003), "stop");
  assert.equal(closeAction(4004), "stop");
});
