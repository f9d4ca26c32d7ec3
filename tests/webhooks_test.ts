/**
 * The webhook queue and its delivery loop (`src/webhooks.ts`) without sockets: requests go to
 * a fake `post` the test answers, so bounds, batching, retries, give-ups, reservations and the
 * shutdown drain are proved exactly. The same paths through a real server and a real receiver
 * are in `tests/webhooks_e2e_test.ts`.
 */
import assert from "node:assert/strict";
import type { HookAnswer, HookRequest } from "../src/hook_client.ts";
import { HookError } from "../src/hook_client.ts";
import { createLogger } from "../src/log.ts";
import { C, Metrics } from "../src/metrics.ts";
import {
  MAX_BATCH_EVENTS,
  retryBound,
  WEBHOOK_TIMINGS,
  type WebhookEvent,
  Webhooks,
  type WebhooksOptions,
} from "../src/webhooks.ts";
import { Inbox, waitFor } from "./helpers.ts";

/** One request the fake application got, answered when the test says. */
interface Call {
  request: HookRequest;
  events: WebhookEvent[];
  answer(status: number): void;
  fail(kind: HookError["kind"]): void;
}

/** A queue whose requests land in `calls`, with its metrics row and log lines. */
function setup(options: Partial<WebhooksOptions> = {}) {
  const calls = new Inbox<Call>();
  const logs: string[] = [];
  const metrics = new Metrics();
  const post = (request: HookRequest) =>
    new Promise<HookAnswer>((resolve, reject) =>
      calls.push({
        request,
        events: JSON.parse(request.body).events,
        answer: (status) => resolve({ status, body: undefined }),
        fail: (kind) => reject(new HookError(kind, `fake ${kind}`)),
      })
    );
  const webhooks = new Webhooks({
    url: "http://app.invalid/hook",
    key: crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
    types: ["room.occupied", "room.vacated", "member.joined", "member.left", "message"],
    timeoutMs: 1000,
    limit: 1000,
    row: metrics.row,
    log: createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) }),
    post,
    ...options,
    timings: {
      batchMs: 3_600_000,
      retryBaseMs: 1,
      retryCapMs: 4,
      warnIntervalMs: 3_600_000,
      ...options.timings,
    },
  });
  return { webhooks, calls, logs, row: metrics.row };
}

function event(n: number, room = "/r"): WebhookEvent {
  return { type: "member.joined", room, ts: n, id: `m${n}` };
}

Deno.test("a full queue drops what does not fit, counts it, and warns once per window", async () => {
  const { webhooks, calls, logs, row } = setup({ limit: 3, timings: { batchMs: 0 } });
  for (let i = 0; i < 6; i++) webhooks.push(event(i));
  assert.equal(webhooks.size, 3);
  assert.equal(row[C.webhookQueued], 3);
  assert.equal(row[C.webhookDropped], 3);
  const warned = logs.filter((l) => l.includes("webhook queue full"));
  assert.equal(warned.length, 1, "the first drop is logged at once, the others wait their window");
  assert.equal(JSON.parse(warned[0]!).count, 1);
  const call = await calls.next("the first request");
  assert.deepEqual(call.events.map((e) => e.id), ["m0", "m1", "m2"]);
  call.answer(204);
  await webhooks.drain();
  assert.equal(row[C.webhookDelivered], 3);
  assert.equal(row[C.webhookQueued], 0);
  const summary = logs.filter((l) => l.includes("webhook queue full")).at(-1)!;
  assert.equal(JSON.parse(summary).count, 2, "the window's other drops are logged together");
});

Deno.test("events go out in order, at most MAX_BATCH_EVENTS per request", async () => {
  const { webhooks, calls, row } = setup();
  for (let i = 0; i < 2 * MAX_BATCH_EVENTS + 50; i++) webhooks.push(event(i));
  // Full batches go at once; the last 50 would wait out the batch time, which drain() cuts.
  const ids: string[] = [];
  for (const size of [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS]) {
    const call = await calls.next("a full batch");
    assert.equal(call.events.length, size);
    ids.push(...call.events.map((e) => e.id as string));
    call.answer(200);
  }
  const draining = webhooks.drain();
  const last = await calls.next("the rest, sent by the drain");
  assert.equal(last.events.length, 50);
  ids.push(...last.events.map((e) => e.id as string));
  last.answer(200);
  await draining;
  assert.deepEqual(ids, Array.from({ length: 2 * MAX_BATCH_EVENTS + 50 }, (_, i) => `m${i}`));
  assert.equal(row[C.webhookDelivered], 2 * MAX_BATCH_EVENTS + 50);
});

Deno.test("a failed request is retried with the same delivery id and body until a 2xx", async () => {
  const { webhooks, calls, row, logs } = setup({ timings: { batchMs: 0 } });
  webhooks.push(event(1));
  webhooks.push(event(2));
  const first = await calls.next("the first attempt");
  const delivery = first.request.headers?.["x-chorus-delivery"];
  assert.match(delivery ?? "", /^[0-9a-f-]{36}$/);
  first.answer(500);
  const second = await calls.next("a retry after a 500");
  second.fail("timeout");
  const third = await calls.next("a retry after a timeout");
  third.answer(302); // not a 2xx: a failure too
  const fourth = await calls.next("a retry after a redirect");
  for (const c of [second, third, fourth]) {
    assert.equal(c.request.headers?.["x-chorus-delivery"], delivery);
    assert.equal(c.request.body, first.request.body);
  }
  fourth.answer(202);
  webhooks.push(event(3));
  const next = await calls.next("the next batch");
  assert.notEqual(next.request.headers?.["x-chorus-delivery"], delivery, "a new request, a new id");
  assert.deepEqual(next.events.map((e) => e.id), ["m3"]);
  next.answer(200);
  await webhooks.drain();
  assert.equal(row[C.webhookRetries], 3);
  assert.equal(row[C.webhookDelivered], 3);
  assert.ok(logs.some((l) => l.includes("webhook request failed, retrying")));
});

Deno.test("the retry delay's bound doubles from the base to the cap", () => {
  const bounds = Array.from({ length: 9 }, (_, i) => retryBound(i, WEBHOOK_TIMINGS));
  assert.deepEqual(bounds, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  // Retrying for the whole window takes more than a handful of attempts, whatever the jitter.
  assert.ok(WEBHOOK_TIMINGS.retryWindowMs >= 5 * 60_000);
});

Deno.test("events still failing after the retry window are given up, counted and warned", async () => {
  const attempts: number[] = [];
  const { webhooks, row, logs } = setup({
    timings: { batchMs: 0, retryWindowMs: 30 },
    post: () => {
      attempts.push(Date.now());
      return Promise.resolve({ status: 503, body: undefined });
    },
  });
  webhooks.push(event(1));
  webhooks.push(event(2));
  await waitFor(() => row[C.webhookGivenUp] === 2, "the batch to be given up");
  assert.ok(Date.now() - attempts[0]! >= 30, "retried for the whole window first");
  assert.ok(attempts.length >= 2);
  assert.equal(row[C.webhookRetries], attempts.length - 1);
  assert.equal(row[C.webhookQueued], 0);
  const warned = logs.find((l) => l.includes("webhook events given up"));
  assert.ok(warned);
  assert.equal(JSON.parse(warned).count, 2);
  await webhooks.drain();
});

Deno.test("a reserved place keeps later events behind it; a cancelled one leaves no trace", async () => {
  const { webhooks, calls } = setup({ timings: { batchMs: 0 } });
  const first = webhooks.reserve();
  webhooks.push(event(2));
  const gone = webhooks.reserve();
  webhooks.push(event(3));
  // Nothing may go out while the first place is empty: the next request proves it.
  first.fill(event(1));
  const call = await calls.next("the batch once the place is filled");
  assert.deepEqual(call.events.map((e) => e.id), ["m1", "m2"]);
  call.answer(200);
  gone.cancel();
  const rest = await calls.next("the rest once the other place is cancelled");
  assert.deepEqual(rest.events.map((e) => e.id), ["m3"]);
  rest.answer(200);
  await webhooks.drain();
  assert.equal(webhooks.size, 0);
});

Deno.test("only the configured event types are queued", async () => {
  const { webhooks, calls } = setup({ types: ["room.occupied"], timings: { batchMs: 0 } });
  assert.equal(webhooks.wants("message"), false);
  webhooks.push({ type: "message", room: "/r", ts: 1 });
  webhooks.push({ type: "room.occupied", room: "/r", ts: 2 });
  const call = await calls.next("the occupied event");
  assert.deepEqual(call.events.map((e) => e.type), ["room.occupied"]);
  call.answer(200);
  await webhooks.drain();
});

Deno.test("drain delivers at once, stops at its deadline and counts what is left as dropped", async () => {
  const answered = new Inbox<number>();
  const { webhooks, row, logs } = setup({
    post: () => {
      answered.push(Date.now());
      return Promise.resolve({ status: 500, body: undefined }); // the application is down
    },
  });
  webhooks.push(event(1));
  const started = Date.now();
  await webhooks.drain(started + 50);
  assert.ok((await answered.next("an attempt")) - started < 1000, "sent without the batch wait");
  assert.ok(Date.now() - started < 1000, "the drain ends near its deadline");
  assert.equal(row[C.webhookDelivered], 0);
  assert.equal(row[C.webhookDropped], 1);
  assert.equal(row[C.webhookQueued], 0);
  assert.ok(logs.some((l) => l.includes("webhook events not delivered before shutdown")));
  webhooks.push(event(2));
  assert.equal(row[C.webhookDropped], 2, "after the drain, nothing more is queued");
});
