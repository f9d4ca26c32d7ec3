/**
 * Webhooks through a real server: real WebSocket and event-stream clients join and leave, and
 * a real HTTP receiver (`tests/hook_receiver.ts`) gets the signed requests, answering as each
 * test says. Delivery timings are shortened through `AppOptions.webhookTimings`; nothing is
 * slept for: every outcome is an awaited request or event.
 */
import assert from "node:assert/strict";
import { mintToken } from "../src/auth.ts";
import type { Config } from "../src/config.ts";
import type { WebhookTimings } from "../src/webhooks.ts";
import {
  type ChatClient,
  chatClient,
  type Event,
  startServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";
import { type Received, type Receiver, signedWith, startReceiver } from "./hook_receiver.ts";
import { SseStream } from "./sse_client.ts";

const SECRET = "webhook-secret-for-tests-0123456789";

/** Short timings: a batch goes after 5 ms, retries after at most 20 ms. */
const FAST: Partial<WebhookTimings> = { batchMs: 5, retryBaseMs: 5, retryCapMs: 20 };

function hooked(
  receiver: Receiver,
  overrides: Partial<Config> = {},
  timings: Partial<WebhookTimings> = {},
): TestServer {
  return startServer(
    { webhookUrl: receiver.url(), webhookSecret: SECRET, webhookVacateDelay: 0, ...overrides },
    { webhookTimings: { ...FAST, ...timings } },
  );
}

/** The events of the next requests, until one of them is `type` (it included). */
async function until(receiver: Receiver, type: string): Promise<Event[]> {
  const events: Event[] = [];
  while (!events.some((e) => e.type === type)) {
    const req = await receiver.requests.next(`a request with ${type}`);
    events.push(...req.body.events);
  }
  return events;
}

/** `type room id` of each event, the shape the order assertions compare. */
function brief(events: Event[]): string[] {
  return events.map((e) => [e.type, e.room, e.id].filter((x) => x !== undefined).join(" "));
}

async function metric(server: TestServer, line: string): Promise<number> {
  const text = await (await fetch(`${server.origin}/metrics`)).text();
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  assert.ok(found, `${line} in /metrics`);
  return Number(found.slice(line.length + 1));
}

function join(
  server: TestServer,
  room: string,
  query = "",
): Promise<{ client: ChatClient; welcome: Event }> {
  return chatClient(server.ws(`${room}${query}`));
}

Deno.test("webhook requests are signed by the documented recipe; another secret fails", async () => {
  const receiver = startReceiver();
  const server = hooked(receiver);
  try {
    const { client } = await join(server, "/signed");
    const req: Received = await receiver.requests.next("the first webhook");
    assert.equal(req.path, "/hook");
    assert.equal(req.headers.get("content-type"), "application/json");
    assert.match(req.headers.get("x-chorus-delivery") ?? "", /^[0-9a-f-]{36}$/);
    assert.ok(Math.abs(Number(req.headers.get("x-chorus-timestamp")) - Date.now()) < 60_000);
    assert.equal(await signedWith(req, SECRET), true);
    assert.equal(await signedWith(req, SECRET.replace("0", "1")), false);
    assert.equal(await signedWith({ ...req, text: req.text + " " }, SECRET), false, "body bound");
    await client.close();
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("occupied, joined, left, vacated: in order, vacated only after the vacate delay", async () => {
  const receiver = startReceiver();
  const server = hooked(receiver, { webhookVacateDelay: 0.3 });
  try {
    const { client, welcome: { id } } = await join(server, "/order");
    await client.close();
    const events = await until(receiver, "room.vacated");
    assert.deepEqual(brief(events), [
      "room.occupied /order",
      `member.joined /order ${id}`,
      `member.left /order ${id}`,
      "room.vacated /order",
    ]);
    const [occupied, joined, left, vacated] = events as [Event, Event, Event, Event];
    assert.ok(occupied.ts <= joined.ts && joined.ts <= left.ts);
    assert.ok(vacated.ts - left.ts >= 300, `vacated ${vacated.ts - left.ts} ms after the leave`);
    assert.deepEqual(Object.keys(occupied).sort(), ["room", "ts", "type"]);
    assert.deepEqual(
      { ...joined, ts: 0 },
      {
        type: "member.joined",
        room: "/order",
        ts: 0,
        id,
        name: joined.name,
        transport: "websocket",
        mode: "chat",
      },
    );
    assert.equal(left.reason, "client");
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("a leave and a rejoin within the vacate delay send neither vacated nor a second occupied", async () => {
  const receiver = startReceiver();
  const server = hooked(receiver, { webhookVacateDelay: 0.5 });
  try {
    await (await join(server, "/reload")).client.close();
    await (await join(server, "/reload")).client.close(); // the page reloaded, and closed
    const events = await until(receiver, "room.vacated");
    assert.deepEqual(brief(events).map((e) => e.split(" ").slice(0, 2).join(" ")), [
      "room.occupied /reload",
      "member.joined /reload",
      "member.left /reload",
      "member.joined /reload",
      "member.left /reload",
      "room.vacated /reload",
    ]);
    assert.ok(events[3]!.ts - events[2]!.ts < 500, "the rejoin came within the delay");
    assert.ok(events[5]!.ts - events[4]!.ts >= 500, "vacated counted from the last leave");
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("a receiver answering 500 three times, then 200, gets every event once, in order, with one delivery id", async () => {
  const answered: { req: Received; status: number }[] = [];
  const receiver = startReceiver((req) => {
    const status = answered.length < 3 ? 500 : 200;
    answered.push({ req, status });
    return new Response(status === 200 ? "{}" : "down", { status });
  });
  const server = hooked(receiver);
  try {
    const { client: a } = await join(server, "/retry");
    const { client: b } = await join(server, "/retry");
    await a.close();
    await b.close();
    await waitFor(
      () =>
        answered.some((x) =>
          x.status === 200 && x.req.body.events.some((e: Event) => e.type === "room.vacated")
        ),
      "the vacated event, accepted",
    );
    const first = answered[0]!.req.headers.get("x-chorus-delivery");
    for (const x of answered.slice(0, 4)) {
      assert.equal(x.req.headers.get("x-chorus-delivery"), first, "retries keep the delivery id");
      assert.equal(x.req.text, answered[0]!.req.text, "retries send the same events");
    }
    const ids = answered.filter((x) => x.status === 200).map((x) =>
      x.req.headers.get("x-chorus-delivery")
    );
    assert.equal(new Set(ids).size, ids.length, "each accepted request is a new delivery");
    const delivered = answered.filter((x) => x.status === 200).flatMap((x) => x.req.body.events);
    assert.deepEqual(brief(delivered).map((e) => e.split(" ").slice(0, 2).join(" ")), [
      "room.occupied /retry",
      "member.joined /retry",
      "member.joined /retry",
      "member.left /retry",
      "member.left /retry",
      "room.vacated /retry",
    ]);
    assert.equal(await metric(server, "chorus_webhook_retries_total"), 3);
    assert.equal(await metric(server, 'chorus_webhook_events_total{outcome="delivered"}'), 6);
    assert.equal(await metric(server, "chorus_webhook_queued_events"), 0);
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("a receiver down for longer than the queue holds: the overflow is dropped, counted and logged; chat goes on", async () => {
  const receiver = startReceiver(() => new Response("down", { status: 503 }));
  const server = hooked(receiver, { webhookQueue: 3 }, { retryBaseMs: 60_000, retryCapMs: 60_000 });
  try {
    // Four rooms come and go: 16 events, of which 3 fit (the request in flight included).
    for (let i = 0; i < 4; i++) await (await join(server, `/busy-${i}`)).client.close();
    await receiver.requests.next("the first, failing request");
    await waitFor(
      async () => await metric(server, 'chorus_webhook_events_total{outcome="dropped"}') === 13,
      "13 dropped",
    );
    assert.equal(await metric(server, "chorus_webhook_queued_events"), 3, "never past the bound");
    assert.ok(server.logs.some((l) => l.includes("webhook queue full, events dropped")));
    // The hub does not wait for the application: chat flows as before.
    const { client: alice } = await join(server, "/chat");
    const { client: bob } = await join(server, "/chat");
    alice.say("still here");
    assert.equal((await bob.until("message")).text, "still here");
    const health = await (await fetch(`${server.origin}/healthz`)).json();
    assert.equal(health.status, "ok");
    await alice.close();
    await bob.close();
    receiver.answer = () => new Response("{}"); // back up: the shutdown delivers what is held
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("member events carry the token's sub and the transport; sse members count too", async () => {
  const jwtSecret = "jwt-secret-for-webhook-tests-0123456789";
  const receiver = startReceiver();
  const server = hooked(receiver, { jwtSecret });
  try {
    const token = await mintToken({ secret: jwtSecret, sub: "user-42", ttlSeconds: 60 });
    const { client: ws } = await join(server, "/subs", `?token=${token}`);
    const [, joined] = await until(receiver, "member.joined");
    assert.equal(joined!.sub, "user-42");
    assert.equal(joined!.id, "user-42");
    const other = await mintToken({ secret: jwtSecret, sub: "user-7", ttlSeconds: 60 });
    const sse = await SseStream.open(`${server.origin}/subs?token=${other}`);
    assert.equal(sse.response.status, 200);
    const [viaSse] = await until(receiver, "member.joined");
    assert.equal(viaSse!.transport, "sse");
    assert.equal(viaSse!.sub, "user-7");
    await sse.cancel();
    await ws.close();
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("message events only when opted in: once per message, with id, offset, from and text; the publish API too", async () => {
  const receiver = startReceiver();
  const plain = hooked(receiver);
  try {
    const { client } = await join(plain, "/quiet");
    client.say("not for the application");
    await client.until("message");
    await client.close();
    const events = await until(receiver, "room.vacated");
    assert.equal(events.filter((e) => e.type === "message").length, 0, "message is opt-in");
  } finally {
    await plain.close();
  }
  const apiKey = "api-key-for-webhook-tests";
  const server = hooked(receiver, {
    apiKey,
    webhookEvents: ["message"],
  });
  try {
    const { client: alice } = await join(server, "/talk");
    const { client: bob, welcome } = await join(server, "/talk");
    alice.say("hello");
    const seen = await bob.until("message");
    const [message, ...rest] = await until(receiver, "message");
    assert.equal(rest.length, 0);
    assert.deepEqual(message, {
      type: "message",
      room: "/talk",
      ts: seen.ts,
      id: seen.id,
      offset: seen.offset,
      from: seen.from,
      text: "hello",
    });
    assert.ok(seen.id.startsWith(`${server.hub.node}-`));
    assert.equal(seen.from.id, welcome.members[0].id);
    // Into a room nobody is in: the hub that published it sends it.
    const res = await fetch(`${server.origin}/api/publish?room=/empty&name=backend`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "text/plain" },
      body: "anyone?",
    });
    assert.equal(res.status, 200);
    const [published] = await until(receiver, "message");
    assert.equal(published!.room, "/empty");
    assert.equal(published!.text, "anyone?");
    assert.equal(published!.from.name, "backend");
    assert.equal(published!.offset, 1);
    await alice.close();
    await bob.close();
  } finally {
    await server.close();
    await receiver.close();
  }
});

Deno.test("shutdown delivers what is queued at once: the last leaves and vacancies included", async () => {
  const receiver = startReceiver();
  // Batches that would wait an hour, and a vacate delay as long: only the shutdown sends.
  const server = hooked(receiver, { webhookVacateDelay: 3600 }, { batchMs: 3_600_000 });
  const { client, welcome: { id } } = await join(server, "/closing");
  assert.equal(receiver.count, 0);
  const started = Date.now();
  await server.close();
  assert.ok(Date.now() - started < 3000, "a bounded shutdown");
  const req = await receiver.requests.next("the request sent by the shutdown");
  assert.deepEqual(brief(req.body.events), [
    "room.occupied /closing",
    `member.joined /closing ${id}`,
    `member.left /closing ${id}`,
    "room.vacated /closing",
  ]);
  assert.equal(req.body.events[2].reason, "shutdown");
  await client.closed;
  await receiver.close();
});

Deno.test("with the moderation hook, message events carry what everyone saw: the replaced text, and nothing of a rejected one", async () => {
  const receiver = startReceiver((req) => {
    if (req.path !== "/moderate") return Response.json({});
    const text: string = req.body.text;
    if (text.startsWith("bad")) return Response.json({ action: "reject", reason: "no" });
    return Response.json({ action: "replace", text: text.replaceAll("darn", "d**n") });
  });
  const server = hooked(receiver, {
    webhookEvents: ["message"],
    publishHookUrl: receiver.url("/moderate"),
  });
  try {
    const { client } = await join(server, "/moderated");
    client.say("bad words");
    assert.equal((await client.until("error")).code, "rejected");
    client.say("darn it");
    const seen = await client.until("message");
    assert.equal(seen.text, "d**n it");
    const webhooks: Event[] = [];
    while (webhooks.length === 0) {
      const req = await receiver.requests.next("the message webhook");
      if (req.path === "/hook") webhooks.push(...req.body.events);
    }
    assert.deepEqual(webhooks.map((e) => [e.type, e.id, e.text]), [[
      "message",
      seen.id,
      "d**n it",
    ]]);
    await client.close();
  } finally {
    await server.close();
    await receiver.close();
  }
});
