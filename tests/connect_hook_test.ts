/**
 * The connect hook over real sockets and a real receiver (`tests/hook_receiver.ts`): who it
 * admits and refuses on both transports, what it is sent and how it is signed, its failures in
 * both modes, the identity it gives, its order with JWT, its metrics, and a client that leaves
 * while it is asked. The validation of its answers is tested without sockets at the end.
 * @module
 */
import assert from "node:assert/strict";
import { connectHook } from "../examples/connect_hook_app.ts";
import { mintToken } from "../src/auth.ts";
import { type Config, ConfigError } from "../src/config.ts";
import {
  createConnectHook,
  DEFAULT_REASON,
  MAX_REASON_LENGTH,
  readConnectAnswer,
  reasonOf,
} from "../src/connect_hook.ts";
import { createLogger } from "../src/log.ts";
import { C, Metrics } from "../src/metrics.ts";
import type { Admitted, MemberRequest } from "../src/upgrade.ts";
import { signingKey } from "../src/signing.ts";
import {
  chatClient,
  Client,
  type Event,
  startServer,
  type TestServer,
  UPGRADE_HEADERS,
  waitFor,
} from "./helpers.ts";
import {
  type Answer,
  type Received,
  type Receiver,
  signedWith,
  startReceiver,
} from "./hook_receiver.ts";
import { post, sseMember, SseStream } from "./sse_client.ts";
import { upgradeRequest } from "./wire.ts";

const SECRET = "connect-hook-test-secret-of-at-least-32-chars";
const JWT_SECRET = "a-jwt-secret-that-is-long-enough-for-hs256";

/** A server asking `receiver`'s hook, with `overrides`; both are closed after `fn`. */
async function withHook(
  answer: Answer,
  overrides: Partial<Config>,
  fn: (server: TestServer, receiver: Receiver) => Promise<void>,
): Promise<void> {
  const receiver = startReceiver(answer);
  const server = startServer({
    connectHookUrl: receiver.url("/connect"),
    webhookSecret: SECRET,
    apiKey: "an-api-key",
    ...overrides,
  });
  try {
    await fn(server, receiver);
  } finally {
    await server.close();
    await receiver.close();
  }
}

/** An upgrade made with `fetch`, for its refusal: status, `Retry-After` and JSON body. */
async function upgrade(server: TestServer, path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${server.origin}${path}`, {
    headers: { ...UPGRADE_HEADERS, ...headers },
  });
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() };
}

/** A refused event stream: status, `Retry-After` and JSON body. */
async function streamRefusal(
  server: TestServer,
  path: string,
  headers: Record<string, string> = {},
) {
  const stream = await SseStream.open(`${server.origin}${path}`, headers);
  const res = stream.response;
  assert.notEqual(res.status, 200, `the stream of ${path} was accepted`);
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() };
}

/** Admits the cookie `session=ada` as Ada and refuses everyone else, with a messy reason. */
const bySession: Answer = (req) =>
  req.body.headers.cookie === "session=ada"
    ? Response.json({ allow: true, id: "user-ada", name: "Ada" })
    : Response.json({ allow: false, reason: "no session:\n\u0007 log in first " }, { status: 403 });

/** A hook that answers only once `release` is called. */
function heldAnswer(answer: Answer = () => Response.json({ allow: true })) {
  const gate = Promise.withResolvers<void>();
  const held: Answer = async (req) => {
    await gate.promise;
    return await answer(req);
  };
  return { held, release: () => gate.resolve() };
}

async function members(server: TestServer, room: string) {
  const res = await fetch(`${server.origin}/api/rooms/members?room=${room}`, {
    headers: { authorization: "Bearer an-api-key" },
  });
  return (await res.json()).members.map((m: { id: string; name: string }) => [m.id, m.name]);
}

Deno.test("the hook admits a cookie session with its identity and refuses another with 403 forbidden and its reason, over WebSocket and SSE", async () => {
  await withHook(bySession, {}, async (server) => {
    const ada = { cookie: "session=ada" };
    const { client, welcome } = await chatClient(server.ws("/lobby?name=Impostor"), ada);
    assert.deepEqual([welcome.id, welcome.name], ["user-ada", "Ada"]);
    const { stream, welcome: streamed } = await sseMember(`${server.origin}/lobby`, ada);
    assert.deepEqual([streamed.id, streamed.name], ["user-ada", "Ada"]);
    assert.deepEqual(await members(server, "/lobby"), [["user-ada", "Ada"], ["user-ada", "Ada"]]);

    const refusal = {
      status: 403,
      retryAfter: null,
      body: { error: { code: "forbidden", message: "no session: log in first" } },
    };
    const mallory = { cookie: "session=mallory" };
    assert.deepEqual(await upgrade(server, "/lobby", mallory), refusal);
    assert.deepEqual(await streamRefusal(server, "/lobby", mallory), refusal);
    const browser = new Client(server.ws("/lobby"), { protocols: ["chorus.v1"], headers: mallory });
    await assert.rejects(browser.opened, "a real WebSocket is refused too");
    assert.equal(server.hub.connections, 2);
    client.socket.close();
    await stream.cancel();
  });
});

Deno.test("the hook's request is signed and carries the room, name, address, origin, transport, sub and headers", async () => {
  await withHook(() => Response.json({ allow: true }), {}, async (server, receiver) => {
    const headers = {
      cookie: "session=ada; theme=dark",
      authorization: "Bearer app-session",
      "user-agent": "hook-test/1",
      origin: server.origin,
    };
    const { client } = await chatClient(server.ws("/lobby?name=Bob"), headers);
    const asked: Received = await receiver.requests.next("the hook's request");
    assert.equal(asked.path, "/connect");
    assert.ok(await signedWith(asked, SECRET), "signed with --webhook-secret");
    assert.ok(!await signedWith(asked, `${SECRET}-not`), "not with another secret");
    // Deno's WebSocket puts its own name before the one a client sets.
    assert.match(asked.body.headers["user-agent"], /hook-test\/1$/);
    assert.deepEqual({ ...asked.body, headers: { ...asked.body.headers, "user-agent": "-" } }, {
      room: "/lobby",
      name: "Bob",
      ip: "127.0.0.1",
      origin: server.origin,
      transport: "websocket",
      sub: null,
      headers: {
        cookie: "session=ada; theme=dark",
        authorization: "Bearer app-session",
        "user-agent": "-",
      },
    });
    client.socket.close();

    const { stream } = await sseMember(`${server.origin}/other`, { "user-agent": "sse-test/1" });
    const streamed = await receiver.requests.next("the stream's hook request");
    assert.deepEqual(streamed.body, {
      room: "/other",
      name: null,
      ip: "127.0.0.1",
      origin: null,
      transport: "sse",
      sub: null,
      headers: { cookie: null, authorization: null, "user-agent": "sse-test/1" },
    });
    await stream.cancel();
  });
});

Deno.test("a hook that does not answer in time refuses with 503 hook_unavailable and Retry-After, on both transports", async () => {
  const { held, release } = heldAnswer();
  await withHook(held, { connectHookTimeout: 0.1 }, async (server) => {
    try {
      const refusal = {
        status: 503,
        retryAfter: "5",
        body: {
          error: {
            code: "hook_unavailable",
            message: "the application could not be asked whether you may connect; try again later",
          },
        },
      };
      assert.deepEqual(await upgrade(server, "/lobby"), refusal);
      assert.deepEqual(await streamRefusal(server, "/lobby"), refusal);
      const warn = server.logs.map((l) => JSON.parse(l)).find((l) => l.code === "hook_unavailable");
      assert.equal(warn?.level, "warn");
      assert.match(warn?.detail, /^timeout: no answer within 100 ms/);
      assert.equal(server.hub.connections, 0);
    } finally {
      release();
    }
  });
});

Deno.test("every answer but an allow or a refusal is a failed hook, and so is an invalid identity", async () => {
  const answers: [string, () => Response][] = [
    ["another status", () => Response.json({ allow: true }, { status: 500 })],
    ["an empty answer", () => new Response(null, { status: 204 })],
    ["malformed JSON", () => new Response("{allow: true", { status: 200 })],
    ["allow not a boolean", () => Response.json({ allow: "yes" })],
    ["an invalid name", () => Response.json({ allow: true, name: "x".repeat(33) })],
    ["an invalid id", () => Response.json({ allow: true, id: "a\nb" })],
    ["invalid rooms", () => Response.json({ allow: true, rooms: "/lobby" })],
  ];
  let next = () => new Response();
  await withHook(() => next(), {}, async (server) => {
    for (const [what, answer] of answers) {
      next = answer;
      const refused = await upgrade(server, "/lobby");
      assert.equal(refused.status, 503, what);
      assert.equal(refused.body.error.code, "hook_unavailable", what);
    }
    const details = server.logs.map((l) => JSON.parse(l)).filter((l) =>
      l.code === "hook_unavailable"
    )
      .map((l) => l.detail);
    assert.deepEqual(details.slice(4), [
      'invalid identity in the answer: "name": name must be at most 32 characters',
      'invalid identity in the answer: "id" must be 1–128 characters without control characters',
      'invalid identity in the answer: "rooms": must be a list of room patterns',
    ]);
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    assert.match(
      metrics,
      /^chorus_hook_verdicts_total\{hook="connect",verdict="unavailable"\} 7$/m,
    );
  });
});

Deno.test("failing open accepts a connection the hook could not decide, but never one it refused", async () => {
  let next = () => Response.json({ allow: true });
  const { held, release } = heldAnswer(() => next());
  await withHook(held, { connectHookTimeout: 0.1, connectHookFailure: "open" }, async (server) => {
    try {
      const { client, welcome } = await chatClient(server.ws("/lobby"));
      assert.match(welcome.name, /^guest-/);
      const { stream } = await sseMember(`${server.origin}/lobby`);
      const logs = server.logs.map((l) => JSON.parse(l));
      const accepted = logs.filter((l) =>
        l.msg === "connect hook failed; connection accepted (--connect-hook-failure open)"
      );
      assert.equal(accepted.length, 2);
      assert.equal(accepted[0].level, "warn");
      assert.match(accepted[0].detail, /^timeout/);
      client.socket.close();
      await stream.cancel();
    } finally {
      release();
    }
    next = () => Response.json({ allow: false, reason: "banned" }, { status: 403 });
    assert.equal((await upgrade(server, "/lobby")).status, 403, "an explicit refusal stands");
    next = () => Response.json({ allow: false, reason: "banned too" });
    assert.equal((await upgrade(server, "/lobby")).body.error.message, "banned too");
  });
});

Deno.test("the hook's identity: nameLocked blocks rename, rooms restricts, and no name gives a guest name", async () => {
  const identities: Record<string, unknown> = {
    locked: { allow: true, name: "Ada", nameLocked: true },
    free: { allow: true, name: "Bea" },
    team: { allow: true, rooms: ["/team/*"] },
    nobody: { allow: true },
  };
  const answer: Answer = (req) => Response.json(identities[req.body.headers.cookie]);
  await withHook(answer, {}, async (server) => {
    const { client: ada, welcome } = await chatClient(server.ws("/r"), { cookie: "locked" });
    assert.equal(welcome.name, "Ada");
    ada.sendEvent({ type: "rename", name: "Eve" });
    assert.equal((await ada.until("error")).code, "name_locked");
    const { stream, welcome: locked } = await sseMember(`${server.origin}/r`, { cookie: "locked" });
    const rename = await post(`${server.origin}/r`, locked.session, {
      type: "rename",
      name: "Eve",
    });
    assert.equal(rename.body.error.code, "name_locked");

    const { client: bea, welcome: beas } = await chatClient(server.ws("/r?name=B"), {
      cookie: "free",
    });
    assert.equal(beas.name, "Bea", "the hook's name wins over ?name=");
    bea.sendEvent({ type: "rename", name: "Beatrix" });
    assert.equal((await bea.until("rename")).name, "Beatrix");

    const outside = await upgrade(server, "/lobby", { cookie: "team" });
    assert.deepEqual([outside.status, outside.body.error.code], [403, "forbidden_room"]);
    assert.equal(outside.body.error.message, "the application does not allow this room");
    const { client: member } = await chatClient(server.ws("/team/a"), { cookie: "team" });

    const { client: guest, welcome: guests } = await chatClient(server.ws("/r"), {
      cookie: "nobody",
    });
    assert.match(guests.name, /^guest-\d{4}$/);
    const { client: named, welcome: nameds } = await chatClient(server.ws("/r?name=Cy"), {
      cookie: "nobody",
    });
    assert.equal(nameds.name, "Cy");
    for (const c of [ada, bea, member, guest, named]) c.socket.close();
    await stream.cancel();
  });
});

Deno.test("with JWT: a bad token is refused before the hook is asked; a good one is then decided by the hook, which sees its sub", async () => {
  let next: Answer = () => Response.json({ allow: false, reason: "suspended" }, { status: 403 });
  await withHook((req) => next(req), { jwtSecret: JWT_SECRET }, async (server, receiver) => {
    assert.equal((await upgrade(server, "/lobby?token=garbage")).status, 401);
    assert.equal((await upgrade(server, "/lobby")).status, 401);
    assert.equal((await streamRefusal(server, "/lobby?token=garbage")).status, 401);
    const outside = await mintToken({
      secret: JWT_SECRET,
      sub: "u1",
      rooms: ["/team"],
      ttlSeconds: 60,
    });
    assert.equal(
      (await upgrade(server, `/lobby?token=${outside}`)).body.error.code,
      "forbidden_room",
    );
    assert.equal(receiver.count, 0, "the hook was not asked about a connection chorus refuses");

    const token = await mintToken({ secret: JWT_SECRET, sub: "u1", name: "Uma", ttlSeconds: 60 });
    const denied = await upgrade(server, `/lobby?token=${token}`);
    assert.deepEqual([denied.status, denied.body.error.message], [403, "suspended"]);
    const asked = await receiver.requests.next("the hook's request");
    assert.deepEqual([asked.body.sub, asked.body.name], ["u1", "Uma"]);

    next = () => Response.json({ allow: true, name: "Uma (admin)", nameLocked: false });
    const { client, welcome } = await chatClient(server.ws(`/lobby?token=${token}`));
    assert.deepEqual([welcome.id, welcome.name], ["u1", "Uma (admin)"]);
    client.sendEvent({ type: "rename", name: "Uma" });
    assert.equal((await client.until("rename")).name, "Uma", "the hook unlocked the token's name");
    client.socket.close();
  });
});

Deno.test("/metrics counts the hook's verdicts and the refusals they cause", async () => {
  let next = () => Response.json({ allow: true });
  await withHook(() => next(), {}, async (server) => {
    const { client } = await chatClient(server.ws("/a"));
    next = () => Response.json({ allow: false }, { status: 403 });
    const denied = await upgrade(server, "/a");
    assert.equal(denied.body.error.message, DEFAULT_REASON);
    await streamRefusal(server, "/a");
    next = () => new Response("oops", { status: 500 });
    await upgrade(server, "/a");
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    for (
      const line of [
        'chorus_hook_verdicts_total{hook="connect",verdict="allow"} 1',
        'chorus_hook_verdicts_total{hook="connect",verdict="deny"} 2',
        'chorus_hook_verdicts_total{hook="connect",verdict="unavailable"} 1',
        'chorus_upgrades_refused_total{reason="forbidden"} 2',
        'chorus_upgrades_refused_total{reason="hook_unavailable"} 1',
      ]
    ) assert.ok(metrics.split("\n").includes(line), line);
    client.socket.close();
  });
});

Deno.test("a client that leaves while the hook is asked is let go at once and holds no connection slot", async () => {
  const { held, release } = heldAnswer();
  let answer: Answer = held;
  await withHook((req) => answer(req), { maxConnections: 1 }, async (server, receiver) => {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const request = upgradeRequest(server.port, {
        path: "/lobby",
        headers: { "sec-websocket-protocol": "chorus.v1" },
      });
      await conn.write(new TextEncoder().encode(request));
      await receiver.requests.next("the hook's request");
      conn.close();
      await waitFor(
        () => server.logs.some((l) => l.includes("connection abandoned")),
        "the server to let the client go",
      );
    } finally {
      release();
    }
    await waitFor(() => server.hub.metrics.row[C.connectAllowed] === 1, "the late allow");
    assert.equal(server.hub.connections, 0);
    answer = () => Response.json({ allow: true });
    const { client } = await chatClient(server.ws("/lobby"));
    assert.equal(server.hub.connections, 1, "the only slot was free");
    client.socket.close();
  });
});

Deno.test("hook requests over the bound are failed at once, without asking the application", async () => {
  const { held, release } = heldAnswer();
  const receiver = startReceiver(held);
  const metrics = new Metrics();
  const logs: string[] = [];
  const hook = createConnectHook({
    url: receiver.url(),
    key: signingKey(SECRET),
    timeoutMs: 10_000,
    failure: "closed",
    log: createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) }),
    row: metrics.row,
    maxPending: 1,
  });
  const admitted: Admitted = {
    room: "/r",
    mode: "chat",
    name: undefined,
    resume: undefined,
    grant: undefined,
    nameLocked: false,
  };
  const request: MemberRequest = {
    params: new URLSearchParams(),
    headers: new Headers(),
    ip: "192.0.2.7",
    transport: "websocket",
  };
  try {
    const first = hook(admitted, request);
    await receiver.requests.next("the first request");
    assert.deepEqual(await hook(admitted, request), {
      refused: "hook_unavailable",
      fields: { room: "/r", detail: "1 hook requests already in flight" },
    });
    assert.equal(receiver.count, 1);
    release();
    assert.deepEqual(await first, admitted);
  } finally {
    release();
    await receiver.close();
  }
});

Deno.test("an answer is read strictly: what allows, what refuses, and what is a failure", () => {
  const read = (status: number, body: unknown) => readConnectAnswer({ status, body });
  const none = { id: undefined, name: undefined, nameLocked: undefined, rooms: undefined };
  assert.deepEqual(read(200, { allow: true }), { verdict: "allow", identity: none });
  assert.deepEqual(read(200, { allow: true, id: null, name: null, rooms: null, extra: 1 }), {
    verdict: "allow",
    identity: none,
  });
  assert.deepEqual(
    read(200, {
      allow: true,
      id: "u7",
      name: "  Ann ",
      nameLocked: true,
      rooms: ["/café", "/t/*"],
    }),
    {
      verdict: "allow",
      identity: { id: "u7", name: "Ann", nameLocked: true, rooms: ["/caf%C3%A9", "/t/*"] },
    },
  );
  assert.deepEqual(read(403, { allow: false, reason: "no" }), { verdict: "deny", reason: "no" });
  assert.deepEqual(read(403, undefined), { verdict: "deny", reason: DEFAULT_REASON });
  assert.deepEqual(read(200, { allow: false }), { verdict: "deny", reason: DEFAULT_REASON });
  for (
    const [status, body] of [
      [201, { allow: true }],
      [401, { allow: false }],
      [200, undefined],
      [200, [true]],
      [200, { allow: 1 }],
      [200, { allow: true, nameLocked: "yes" }],
      [200, { allow: true, rooms: ["lobby"] }],
    ] as const
  ) assert.equal(read(status, body).verdict, "unavailable", JSON.stringify([status, body]));
});

Deno.test("a refusal reason is one printable line of bounded length", () => {
  assert.equal(reasonOf("  banned\r\nuntil\tMonday \u202eyadnoM "), "banned until Monday yadnoM");
  assert.equal(reasonOf(42), DEFAULT_REASON);
  assert.equal(reasonOf(" \n "), DEFAULT_REASON);
  const long = reasonOf("é".repeat(500));
  assert.equal(Array.from(long).length, MAX_REASON_LENGTH);
  assert.ok(long.endsWith("…"));
  assert.equal(Array.from(reasonOf("🎉".repeat(300))).length, MAX_REASON_LENGTH, "no split pairs");
});

Deno.test("webhooks tell the id the connect hook gave as the member's sub", async () => {
  const receiver = startReceiver((req) =>
    req.path === "/connect"
      ? Response.json({ allow: true, id: "user-7", name: "Sev" })
      : Response.json({ ok: true })
  );
  const server = startServer({
    connectHookUrl: receiver.url("/connect"),
    webhookUrl: receiver.url("/hook"),
    webhookSecret: SECRET,
    webhookEvents: ["member.joined"],
  }, { webhookTimings: { batchMs: 5 } });
  try {
    const { client } = await chatClient(server.ws("/lobby"));
    let joined;
    while (joined === undefined) {
      const req = await receiver.requests.next("the member.joined webhook");
      if (req.path === "/hook") {
        joined = req.body.events.find((e: Event) => e.type === "member.joined");
      }
    }
    assert.deepEqual([joined.id, joined.name, joined.sub], ["user-7", "Sev", "user-7"]);
    client.socket.close();
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("examples/connect_hook_app.ts admits its sessions through a real server and refuses the rest", async () => {
  const users = new Map([
    ["s-ada", { id: "ada", name: "Ada", admin: true }],
    ["s-bob", { id: "bob", name: "Bob", admin: false }],
  ]);
  const app = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    connectHook(SECRET, (session) => users.get(session)),
  );
  const server = startServer({
    connectHookUrl: `http://127.0.0.1:${app.addr.port}/chorus/connect`,
    webhookSecret: SECRET,
  });
  try {
    const { client, welcome } = await chatClient(server.ws("/admin/ops"), {
      cookie: "theme=dark; session=s-ada",
    });
    assert.deepEqual([welcome.id, welcome.name], ["ada", "Ada"]);
    const bob = { cookie: "session=s-bob" };
    const { stream, welcome: bobs } = await sseMember(`${server.origin}/lobby`, bob);
    assert.deepEqual([bobs.id, bobs.name], ["bob", "Bob"]);
    const admins = await upgrade(server, "/admin/ops", bob);
    assert.deepEqual([admins.status, admins.body.error.message], [403, "admins only"]);
    const stranger = await streamRefusal(server, "/lobby");
    assert.deepEqual([stranger.status, stranger.body.error.message], [403, "please log in first"]);
    const forged = await fetch(`http://127.0.0.1:${app.addr.port}/chorus/connect`, {
      method: "POST",
      headers: { "x-chorus-timestamp": String(Date.now()), "x-chorus-signature": "sha256=00" },
      body: JSON.stringify({ room: "/lobby", headers: { cookie: "session=s-ada" } }),
    });
    assert.equal(forged.status, 401, "the app refuses a request chorus did not sign");
    await forged.body?.cancel();
    client.socket.close();
    await stream.cancel();
  } finally {
    await server.close();
    await app.shutdown();
  }
});

Deno.test("docs/hooks.md shows the example's connect hook as it is in examples/connect_hook_app.ts", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/hooks.md", import.meta.url));
  const example = await Deno.readTextFile(
    new URL("../examples/connect_hook_app.ts", import.meta.url),
  );
  const section = doc.slice(doc.indexOf("## Connect hook"), doc.indexOf("## Moderation hook"));
  const snippet = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(snippet, "a ts snippet in the connect hook section");
  assert.ok(example.includes(snippet), "the snippet is a verbatim part of the example");
});

Deno.test("a library user's connect hook URL without --webhook-secret stops the app from being built", () => {
  assert.throws(
    () => startServer({ connectHookUrl: "http://127.0.0.1:9/connect" }),
    (err) => err instanceof ConfigError && /needs --webhook-secret/.test(err.message),
  );
});
