/**
 * The moderation hook over real sockets, with a real HTTP receiver standing in for the
 * application: allow, replace and reject as the sender, another member and the history see
 * them; a room's order under a slow hook, and rooms not holding each other up; timeouts in
 * both failure modes; raw frames, `POST /api/publish`, SSE POSTs; the signed request; the
 * verdict counters; and one request per message across `--workers` and Redis instances.
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import { C } from "../src/metrics.ts";
import {
  type ChatClient,
  chatClient,
  type Event,
  type MainProcess,
  rawClient,
  redisMissing,
  startMain,
  startRedis,
  startServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { type Answer, type Receiver, signedWith, startReceiver } from "./hook_receiver.ts";
import { post, sseMember } from "./sse_client.ts";

const SECRET = "moderation-test-secret-0123456789abcdef";
const KEY = "moderation-api-key-0123456789";

/**
 * The application's policy in these tests: texts starting with "bad" are rejected, "darn" is
 * masked, everything else is allowed.
 */
const moderator: Answer = (req) => {
  const text: string = req.body.text;
  if (text.startsWith("bad")) return Response.json({ action: "reject", reason: "no bad words" });
  if (text.includes("darn")) {
    return Response.json({ action: "replace", text: text.replaceAll("darn", "d**n") });
  }
  return Response.json({ action: "allow" });
};

/** Requests the receiver holds until the test (or its end) opens the valve. */
class Valve {
  #open = Promise.withResolvers<void>();
  wait(): Promise<void> {
    return this.#open.promise;
  }
  open(): void {
    this.#open.resolve();
  }
}

/**
 * Run `fn` against a server whose moderation hook is a fresh receiver answering with `answer`;
 * everything is stopped afterwards, held requests released first.
 */
async function withModeration(
  overrides: Partial<Config>,
  fn: (server: TestServer, receiver: Receiver, valve: Valve) => Promise<void>,
  answer: Answer = moderator,
): Promise<void> {
  const receiver = startReceiver(answer);
  const valve = new Valve();
  const server = startServer({
    apiKey: KEY,
    webhookSecret: SECRET,
    publishHookUrl: receiver.url("/moderate"),
    ...overrides,
  });
  try {
    await fn(server, receiver, valve);
  } finally {
    valve.open();
    await server.close();
    await receiver.close();
  }
}

/** The next event that is not about presence: a message or an error. */
async function nextSaid(client: ChatClient): Promise<Event> {
  for (;;) {
    const e = await client.next();
    if (e.type === "message" || e.type === "error") return e;
  }
}

/** Two chat members of `room`, both past their welcomes and the second's join. */
async function pair(server: TestServer, room: string) {
  const { client: ann, welcome } = await chatClient(server.ws(`${room}?name=ann`));
  const { client: bob } = await chatClient(server.ws(`${room}?name=bob`));
  await ann.next("join");
  return { ann, bob, annId: welcome.id as string };
}

/** The texts of a room's kept messages, through the history API. */
async function history(server: TestServer, room: string): Promise<string[]> {
  const res = await fetch(`${server.origin}/api/rooms/history?room=${room}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  return (await res.json()).messages.map((m: Event) => m.text);
}

/** `POST /api/publish` of a text with the API key. */
function apiPublish(
  server: TestServer,
  room: string,
  text: string,
  params = "",
): Promise<Response> {
  return fetch(`${server.origin}/api/publish?room=${room}${params}`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" },
    body: text,
  });
}

Deno.test("an allowed message reaches sender and members after one signed request of room, sender and text", async () => {
  await withModeration({}, async (server, receiver) => {
    const { ann, bob, annId } = await pair(server, "/lobby");
    ann.say("hello");
    assert.equal((await nextSaid(bob)).text, "hello");
    assert.equal((await nextSaid(ann)).text, "hello");
    const req = await receiver.requests.next("the hook request");
    assert.equal(req.path, "/moderate");
    assert.deepEqual(JSON.parse(req.text), {
      room: "/lobby",
      from: { id: annId, name: "ann" },
      text: "hello",
    });
    assert.ok(await signedWith(req, SECRET), "signed with --webhook-secret");
    assert.equal(await signedWith(req, "another-secret-0123456789abcdefgh"), false);
    assert.equal(receiver.count, 1);
    await ann.close();
    await bob.close();
  });
});

Deno.test("a replaced message is the new text for the sender, every member and the history", async () => {
  await withModeration({}, async (server) => {
    const { ann, bob } = await pair(server, "/lobby");
    ann.say("darn it");
    assert.equal((await nextSaid(bob)).text, "d**n it");
    assert.equal((await nextSaid(ann)).text, "d**n it");
    const { client: cy, welcome } = await chatClient(server.ws("/lobby?name=cy"));
    assert.deepEqual(welcome.history.map((m: Event) => m.text), ["d**n it"]);
    assert.deepEqual(await history(server, "/lobby"), ["d**n it"]);
    await Promise.all([ann.close(), bob.close(), cy.close()]);
  });
});

Deno.test("a rejected message tells its sender the reason; nobody else sees it and it is not kept", async () => {
  await withModeration({}, async (server) => {
    const { ann, bob } = await pair(server, "/lobby");
    ann.say("bad words");
    assert.deepEqual(await nextSaid(ann), {
      type: "error",
      code: "rejected",
      message: "no bad words",
    });
    ann.say("sorry");
    assert.equal((await nextSaid(bob)).text, "sorry", "bob's first message is the next one");
    assert.equal((await nextSaid(ann)).text, "sorry");
    assert.deepEqual(await history(server, "/lobby"), ["sorry"]);
    await ann.close();
    await bob.close();
  });
});

Deno.test("a room's messages keep their order when the hook answers the second before the first", async () => {
  await withModeration({}, async (server, receiver, valve) => {
    receiver.answer = async (req) => {
      if (req.body.text === "first") await valve.wait();
      return Response.json({ action: "allow" });
    };
    const { ann, bob } = await pair(server, "/lobby");
    ann.say("first");
    ann.say("second");
    // The second verdict is in (and counted) while the first is still held.
    await waitFor(() => server.hub.metrics.row[C.publishAllowed] === 1, "the second verdict");
    assert.equal(receiver.count, 2, "both were asked at once");
    valve.open();
    assert.deepEqual([(await nextSaid(bob)).text, (await nextSaid(bob)).text], [
      "first",
      "second",
    ]);
    assert.deepEqual([(await nextSaid(ann)).text, (await nextSaid(ann)).text], [
      "first",
      "second",
    ]);
    assert.deepEqual(await history(server, "/lobby"), ["first", "second"]);
    await ann.close();
    await bob.close();
  });
});

Deno.test("a room whose verdict is slow does not hold up another room", async () => {
  await withModeration({}, async (server, receiver, valve) => {
    receiver.answer = async (req) => {
      if (req.body.room === "/slow") await valve.wait();
      return Response.json({ action: "allow" });
    };
    const slow = await pair(server, "/slow");
    const fast = await pair(server, "/fast");
    slow.ann.say("waiting");
    await receiver.requests.next("the slow room's request");
    fast.ann.say("quick");
    assert.equal((await nextSaid(fast.bob)).text, "quick");
    valve.open();
    assert.equal((await nextSaid(slow.bob)).text, "waiting");
    await Promise.all([slow.ann, slow.bob, fast.ann, fast.bob].map((c) => c.close()));
  });
});

Deno.test("failing closed, a hook that times out costs the message and its sender hears hook_unavailable", async () => {
  await withModeration({ publishHookTimeout: 0.2 }, async (server, receiver, valve) => {
    receiver.answer = async () => {
      await valve.wait();
      return Response.json({ action: "allow" });
    };
    const { ann, bob } = await pair(server, "/lobby");
    ann.say("lost");
    const error = await nextSaid(ann);
    assert.equal(error.type, "error");
    assert.equal(error.code, "hook_unavailable");
    receiver.answer = moderator;
    ann.say("kept");
    assert.equal((await nextSaid(bob)).text, "kept", "the timed-out message never came");
    assert.deepEqual(await history(server, "/lobby"), ["kept"]);
    assert.equal(server.hub.metrics.row[C.publishUnavailable], 1);
    const warn = server.logs.map((l) => JSON.parse(l)).find((l) => l.level === "warn");
    assert.deepEqual([warn?.msg, warn?.kind, warn?.failure], [
      "moderation hook failed",
      "timeout",
      "closed",
    ]);
    await ann.close();
    await bob.close();
  });
});

Deno.test("failing open, a message the hook did not answer about in time is published as it is", async () => {
  await withModeration(
    { publishHookTimeout: 0.2, publishHookFailure: "open" },
    async (server, receiver, valve) => {
      receiver.answer = async () => {
        await valve.wait();
        return Response.json({ action: "reject" });
      };
      const { ann, bob } = await pair(server, "/lobby");
      ann.say("bad but unjudged");
      assert.equal((await nextSaid(bob)).text, "bad but unjudged");
      assert.equal((await nextSaid(ann)).text, "bad but unjudged");
      assert.equal(server.hub.metrics.row[C.publishUnavailable], 1);
      assert.equal(server.hub.metrics.row[C.publishAllowed], 0);
      await ann.close();
      await bob.close();
    },
  );
});

Deno.test("a raw client's rejected text frame is dropped silently; its binary frames are not asked about", async () => {
  await withModeration({}, async (server, receiver) => {
    const one = await rawClient(server.ws("/raw"));
    const two = await rawClient(server.ws("/raw"));
    const { client: chat } = await chatClient(server.ws("/raw?name=chat"));
    one.send("bad frame");
    await receiver.requests.next("the raw frame's request");
    one.send(new Uint8Array([1, 2, 3]));
    const bytes = await two.frames.next("the binary frame");
    assert.deepEqual(new Uint8Array(bytes as ArrayBuffer), new Uint8Array([1, 2, 3]));
    assert.equal(receiver.count, 1, "binary frames are not chat messages");
    one.send("fine frame");
    assert.equal(await two.text(), "fine frame", "the rejected frame never came");
    assert.equal((await one.frames.next("its own binary frame") as ArrayBuffer).byteLength, 3);
    assert.equal(await one.text(), "fine frame", "nor did its sender hear of it");
    assert.equal((await nextSaid(chat)).text, "fine frame");
    await Promise.all([one.close(), two.close(), chat.close()]);
  });
});

Deno.test("POST /api/publish waits for the verdict: 422 rejected, 200 with the replaced text, and moderate=false asks nothing", async () => {
  await withModeration({}, async (server, receiver) => {
    const { client: bob } = await chatClient(server.ws("/news?name=bob"));
    const rejected = await apiPublish(server, "/news", "bad news");
    assert.equal(rejected.status, 422);
    assert.deepEqual(await rejected.json(), {
      error: { code: "rejected", message: "no bad words" },
    });
    const replaced = await apiPublish(server, "/news", "darn news");
    assert.equal(replaced.status, 200);
    const body = await replaced.json();
    assert.equal(body.offset, 1);
    const message = await nextSaid(bob);
    assert.deepEqual([message.text, message.offset], ["d**n news", 1]);
    assert.equal(receiver.count, 2);
    const own = await apiPublish(server, "/news", "bad but our own", "&moderate=false");
    assert.equal(own.status, 200);
    await own.body?.cancel();
    assert.equal((await nextSaid(bob)).text, "bad but our own");
    assert.equal(receiver.count, 2, "moderate=false skips the hook");
    const wrong = await apiPublish(server, "/news", "x", "&moderate=no");
    assert.equal(wrong.status, 400);
    assert.equal((await wrong.json()).error.code, "bad_request");
    assert.deepEqual(await history(server, "/news"), ["d**n news", "bad but our own"]);
    await bob.close();
  });
});

Deno.test("POST /api/publish answers 503 hook_unavailable with Retry-After when the hook fails closed", async () => {
  await withModeration({}, async (server) => {
    const res = await apiPublish(server, "/news", "anything");
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("retry-after"), "1");
    assert.equal((await res.json()).error.code, "hook_unavailable");
    assert.deepEqual(await history(server, "/news"), []);
  }, () => new Response("down for maintenance", { status: 500 }));
});

Deno.test("a room with --publish-hook-queue messages waiting refuses the next at once with 503, other rooms not", async () => {
  await withModeration({ publishHookQueue: 1 }, async (server, receiver, valve) => {
    receiver.answer = async (req) => {
      if (req.body.room === "/full") await valve.wait();
      return Response.json({ action: "allow" });
    };
    const waiting = apiPublish(server, "/full", "first");
    await receiver.requests.next("the first request");
    const refused = await apiPublish(server, "/full", "second");
    assert.equal(refused.status, 503);
    assert.deepEqual(await refused.json(), {
      error: {
        code: "hook_unavailable",
        message: "the room's moderation queue is full (--publish-hook-queue 1)",
      },
    });
    assert.equal(receiver.count, 1, "the refused message was not asked about");
    const other = await apiPublish(server, "/other", "fine");
    assert.equal(other.status, 200, "another room's line has room");
    await other.body?.cancel();
    valve.open();
    const first = await waiting;
    assert.equal(first.status, 200);
    await first.body?.cancel();
    assert.deepEqual(await history(server, "/full"), ["first"]);
  });
});

Deno.test("at shutdown a publish still waiting for its verdict is answered 503 at once", async () => {
  await withModeration({}, async (server, receiver, valve) => {
    receiver.answer = async () => {
      await valve.wait();
      return Response.json({ action: "allow" });
    };
    const waiting = apiPublish(server, "/news", "late");
    await receiver.requests.next("the request");
    const closing = server.close();
    const res = await waiting;
    assert.equal(res.status, 503);
    assert.equal((await res.json()).error.code, "hook_unavailable");
    await closing;
  });
});

Deno.test("an SSE member's POST is answered 202 and its verdict comes on its stream", async () => {
  await withModeration({}, async (server) => {
    const { stream, welcome } = await sseMember(`${server.origin}/lobby?name=sam`);
    const { client: bob } = await chatClient(server.ws("/lobby?name=bob"));
    const url = `${server.origin}/lobby`;
    const rejected = await post(url, welcome.session, { type: "message", text: "bad post" });
    assert.equal(rejected.status, 202);
    const error = await stream.until("error");
    assert.deepEqual([error.code, error.message], ["rejected", "no bad words"]);
    const replaced = await post(url, welcome.session, { type: "message", text: "darn post" });
    assert.equal(replaced.status, 202);
    assert.equal((await stream.until("message")).text, "d**n post");
    assert.equal((await nextSaid(bob)).text, "d**n post", "bob never saw the rejected post");
    await stream.cancel();
    await bob.close();
  });
});

Deno.test("every verdict is counted in /metrics under chorus_hook_verdicts_total", async () => {
  await withModeration({}, async (server, receiver) => {
    const { ann, bob } = await pair(server, "/lobby");
    for (const text of ["fine", "darn", "bad"]) {
      ann.say(text);
      await nextSaid(ann);
    }
    receiver.answer = () => Response.json({ action: "maybe" });
    ann.say("malformed answer");
    assert.equal((await nextSaid(ann)).code, "hook_unavailable");
    const text = await (await fetch(`${server.origin}/metrics`)).text();
    for (const [verdict, n] of [["allow", 1], ["replace", 1], ["reject", 1], ["unavailable", 1]]) {
      const line = `chorus_hook_verdicts_total{hook="publish",verdict="${verdict}"} ${n}`;
      assert.ok(text.includes(line), `${line} in\n${text}`);
    }
    await ann.close();
    await bob.close();
  });
});

/** Members in `room` of each of `mains`, every one past its welcome. */
async function membersOf(mains: MainProcess[], room: string, perMain: number) {
  const clients: ChatClient[] = [];
  for (const main of mains) {
    for (let i = 0; i < perMain; i++) {
      clients.push((await chatClient(`ws://127.0.0.1:${main.port}${room}?name=m${i}`)).client);
    }
  }
  return clients;
}

/** Each client says one message; every client hears all of them, once each. */
async function everyoneHearsEveryone(clients: ChatClient[]): Promise<void> {
  clients.forEach((c, i) => c.say(`from ${i}`));
  await Promise.all(clients.map(async (c) => {
    const heard = new Set<string>();
    while (heard.size < clients.length) heard.add((await nextSaid(c)).text);
  }));
}

Deno.test("with --workers 2, each message is asked about once, by the worker that took it", async () => {
  const receiver = startReceiver(moderator);
  const args = ["--workers", "2", "--webhook-secret", SECRET];
  const main = await startMain([...args, "--publish-hook-url", receiver.url("/moderate")]);
  try {
    const clients = await membersOf([main], "/lobby", 6);
    await everyoneHearsEveryone(clients);
    assert.equal(receiver.count, clients.length);
    await Promise.all(clients.map((c) => c.close()));
  } finally {
    await main.stop();
    await receiver.close();
  }
});

const missing = await redisMissing();

Deno.test({
  name: "on a Redis backplane, each message is asked about once, by the instance that took it" +
    (missing ? ` (ignored: ${missing})` : ""),
  ignore: missing !== undefined,
  fn: async () => {
    const redis = await startRedis();
    const receiver = startReceiver(moderator);
    const args = ["--redis-url", redis.url, "--webhook-secret", SECRET];
    const hook = ["--publish-hook-url", receiver.url("/moderate")];
    const mains: MainProcess[] = [];
    try {
      mains.push(await startMain([...args, ...hook]), await startMain([...args, ...hook]));
      const clients = await membersOf(mains, "/lobby", 2);
      // Presence crossed Redis: everyone sees the four members.
      for (const main of mains) {
        await waitFor(
          async () => (await (await fetch(`${main.url}healthz`)).json()).connections === 4,
          "every instance sees every member",
        );
      }
      await everyoneHearsEveryone(clients);
      assert.equal(receiver.count, clients.length);
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      await Promise.all(mains.map((m) => m.stop()));
      await receiver.close();
      await redis.kill();
    }
  },
});
