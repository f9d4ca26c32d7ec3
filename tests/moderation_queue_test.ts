/**
 * The moderation hook's lines without sockets: a stand-in application whose answers the test
 * gives one by one, so the order verdicts are handed out in, the pipeline depth, the bound of
 * a room's line, the failure modes, the validation of answers and the counters are each shown
 * exactly.
 * @module
 */
import assert from "node:assert/strict";
import { type HookAnswer, HookError, type HookRequest } from "../src/hook_client.ts";
import { createLogger } from "../src/log.ts";
import { C, Metrics } from "../src/metrics.ts";
import {
  DEFAULT_REJECT_REASON,
  MAX_REASON_LENGTH,
  Moderation,
  type ModerationOptions,
  parseDecision,
  PIPELINE_DEPTH,
  type Verdict,
} from "../src/moderation.ts";
import { MAX_TEXT_LENGTH } from "../src/protocol.ts";

/** A request the stand-in application holds until the test answers it. */
interface Held {
  request: HookRequest;
  /** The parsed body. */
  body: { room: string; from: { id: string; name: string }; text: string };
  answer(status: number, body: unknown): void;
  fail(err: unknown): void;
}

/** A gate over a stand-in application, with what it was asked and what it handed out. */
function gate(options: Partial<ModerationOptions> = {}) {
  const held: Held[] = [];
  const settled: { room: string; text: string; verdict: Verdict }[] = [];
  const logs: string[] = [];
  const metrics = new Metrics();
  const moderation = new Moderation({
    url: "http://app.test/moderate",
    key: Promise.resolve({} as CryptoKey),
    timeoutMs: 1000,
    failure: "closed",
    queue: 1000,
    row: metrics.row,
    log: createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) }),
    post: (request) =>
      new Promise<HookAnswer>((resolve, reject) => {
        held.push({
          request,
          body: JSON.parse(request.body),
          answer: (status, body) => resolve({ status, body }),
          fail: reject,
        });
      }),
    ...options,
  });
  const send = (room: string, text: string, from = { id: "u1", name: "Ann" }) =>
    moderation.check(room, from, text, (verdict) => settled.push({ room, text, verdict }));
  return { moderation, held, settled, logs, row: metrics.row, send };
}

/** Let the stand-in's promise handlers run. */
const turn = () => new Promise((r) => setTimeout(r, 0));

const allow = { action: "allow" };

Deno.test("a request carries the room, the sender and the text, to the hook's URL with its timeout", () => {
  const { held, send } = gate({ timeoutMs: 250 });
  send("/lobby", "hello", { id: "u7", name: "Bea" });
  assert.equal(held.length, 1);
  assert.equal(held[0]!.request.url, "http://app.test/moderate");
  assert.equal(held[0]!.request.timeoutMs, 250);
  assert.equal(
    held[0]!.request.body,
    '{"room":"/lobby","from":{"id":"u7","name":"Bea"},"text":"hello"}',
  );
});

Deno.test("a room's verdicts are handed out in arrival order though the answers come in reverse", async () => {
  const { held, settled, send } = gate();
  send("/r", "one");
  send("/r", "two");
  send("/r", "three");
  assert.equal(held.length, 3, "all three are asked about at once");
  held[2]!.answer(200, { action: "replace", text: "THREE" });
  held[1]!.answer(200, allow);
  await turn();
  assert.equal(settled.length, 0, "nothing passes the first message still waiting");
  held[0]!.answer(200, allow);
  await turn();
  assert.deepEqual(settled.map((s) => s.verdict), ["one", "two", "THREE"]);
});

Deno.test("a room waiting for a slow verdict does not hold up another room", async () => {
  const { held, settled, send } = gate();
  send("/slow", "first");
  send("/fast", "quick");
  held[1]!.answer(200, allow);
  await turn();
  assert.deepEqual(settled, [{ room: "/fast", text: "quick", verdict: "quick" }]);
  held[0]!.answer(200, allow);
  await turn();
  assert.equal(settled.length, 2);
});

Deno.test(`at most ${PIPELINE_DEPTH} requests of one room are in flight; the next is asked when one is answered`, async () => {
  const { held, settled, send } = gate();
  for (let i = 0; i < PIPELINE_DEPTH + 2; i++) send("/r", `m${i}`);
  send("/other", "x");
  assert.equal(held.length, PIPELINE_DEPTH + 1, "the depth is per room");
  assert.deepEqual(held.at(-1)!.body.room, "/other");
  held[1]!.answer(200, allow);
  await turn();
  assert.equal(held.length, PIPELINE_DEPTH + 2);
  assert.equal(held.at(-1)!.body.text, `m${PIPELINE_DEPTH}`);
  for (const h of held) h.answer(200, allow);
  await turn();
  held.at(-1)!.answer(200, allow);
  await turn();
  assert.deepEqual(
    settled.filter((s) => s.room === "/r").map((s) => s.verdict),
    Array.from({ length: PIPELINE_DEPTH + 2 }, (_, i) => `m${i}`),
  );
});

Deno.test("a room's line holds --publish-hook-queue messages; the next is refused at once, and the line takes more once verdicts come", async () => {
  const { moderation, held, settled, send, row } = gate({ queue: 2 });
  send("/r", "a");
  send("/r", "b");
  send("/r", "c");
  assert.equal(held.length, 2, "the refused message is not asked about");
  assert.equal(settled.length, 1);
  assert.equal(settled[0]!.text, "c");
  assert.deepEqual(settled[0]!.verdict, {
    type: "error",
    code: "hook_unavailable",
    message: "the room's moderation queue is full (--publish-hook-queue 2)",
  });
  assert.equal(row[C.publishUnavailable], 1);
  send("/other", "d");
  assert.equal(held.length, 3, "the bound is per room");
  held[0]!.answer(200, allow);
  await turn();
  assert.equal(moderation.waiting("/r"), 1);
  send("/r", "e");
  assert.equal(held.length, 4);
});

Deno.test("allow, replace and reject become the text, the new text and a rejected error, each counted", async () => {
  const { held, settled, send, row } = gate();
  send("/r", "fine");
  send("/r", "darn");
  send("/r", "spam");
  held[0]!.answer(200, allow);
  held[1]!.answer(200, { action: "replace", text: "d**n" });
  held[2]!.answer(200, { action: "reject", reason: "no links" });
  await turn();
  assert.deepEqual(settled.map((s) => s.verdict), [
    "fine",
    "d**n",
    { type: "error", code: "rejected", message: "no links" },
  ]);
  assert.deepEqual(
    [row[C.publishAllowed], row[C.publishReplaced], row[C.publishRejected]],
    [1, 1, 1],
  );
  assert.equal(row[C.publishUnavailable], 0);
});

Deno.test("failing closed, a timeout, a network error, another status or a malformed answer refuse the message with hook_unavailable", async () => {
  const { held, settled, send, row, logs } = gate({ failure: "closed" });
  for (const t of ["t", "n", "s", "m"]) send("/r", t);
  held[0]!.fail(new HookError("timeout", "no answer within 1000 ms"));
  held[1]!.fail(new HookError("network", "connection refused"));
  held[2]!.answer(500, { action: "allow" });
  held[3]!.answer(200, { action: "publish" });
  await turn();
  for (const s of settled) {
    assert.equal(typeof s.verdict, "object", s.text);
    assert.equal((s.verdict as { code: string }).code, "hook_unavailable");
  }
  assert.equal(settled.length, 4);
  assert.equal(row[C.publishUnavailable], 4);
  const warn = JSON.parse(logs[0]!);
  assert.deepEqual(
    [warn.level, warn.msg, warn.kind, warn.failure],
    ["warn", "moderation hook failed", "timeout", "closed"],
  );
  assert.equal(logs.length, 1, "one warn line a second; the rest are counted");
});

Deno.test("failing open, a message the hook could not judge is published as it is, and still counted", async () => {
  const { held, settled, send, row } = gate({ failure: "open" });
  send("/r", "as is");
  send("/r", "also");
  held[0]!.fail(new HookError("timeout", "no answer"));
  held[1]!.answer(200, "not an object");
  await turn();
  assert.deepEqual(settled.map((s) => s.verdict), ["as is", "also"]);
  assert.equal(row[C.publishUnavailable], 2);
  assert.equal(row[C.publishAllowed], 0);
});

Deno.test("frequent failures are logged once a second, with the count of the lines skipped", async () => {
  let now = 0;
  const { held, send, logs } = gate({ now: () => now });
  for (let i = 0; i < 5; i++) send("/r", `m${i}`);
  for (const h of held.splice(0)) h.fail(new HookError("network", "refused"));
  await turn();
  assert.equal(logs.length, 1);
  now += 1000;
  send("/r", "later");
  held[0]!.fail(new HookError("network", "refused"));
  await turn();
  assert.equal(logs.length, 2);
  assert.equal(JSON.parse(logs[1]!).skipped, 4);
});

Deno.test("an error that is not the application's failure is logged as an error, and the room goes on", async () => {
  const { held, settled, send, logs } = gate();
  send("/r", "a");
  send("/r", "b");
  held[0]!.fail(new RangeError("a bug"));
  held[1]!.answer(200, allow);
  await turn();
  assert.deepEqual(settled.map((s) => typeof s.verdict), ["object", "string"]);
  assert.ok(logs.some((l) => JSON.parse(l).level === "error" && l.includes("a bug")), logs.join());
});

Deno.test("closing refuses every waiting message at once and ignores answers that come later", async () => {
  const { moderation, held, settled, send } = gate();
  send("/r", "a");
  send("/s", "b");
  moderation.close();
  assert.deepEqual(settled.map((s) => (s.verdict as { code: string }).code), [
    "hook_unavailable",
    "hook_unavailable",
  ]);
  held[0]!.answer(200, allow);
  await turn();
  assert.equal(settled.length, 2);
  send("/r", "c");
  assert.equal(settled.length, 3, "refused at once once closed");
  assert.equal(held.length, 2, "and not asked about");
});

Deno.test("an answer is validated: only 200 with a well-formed action is a decision", () => {
  const ok = (body: unknown, text = "hi") => parseDecision({ status: 200, body }, text);
  assert.deepEqual(ok({ action: "allow", extra: 1 }), { action: "allow" });
  assert.deepEqual(ok({ action: "replace", text: "" }), { action: "replace", text: "" });
  assert.deepEqual(ok({ action: "reject", reason: "no" }), { action: "reject", reason: "no" });
  assert.deepEqual(ok({ action: "reject" }), { action: "reject", reason: DEFAULT_REJECT_REASON });
  assert.equal(parseDecision({ status: 201, body: { action: "allow" } }, "hi"), "status 201");
  for (const bad of [undefined, null, [], "allow", { action: "ALLOW" }, { text: "x" }]) {
    assert.equal(typeof ok(bad), "string", JSON.stringify(bad));
  }
  assert.equal(typeof ok({ action: "replace" }), "string");
  assert.equal(typeof ok({ action: "replace", text: 5 }), "string");
  assert.equal(typeof ok({ action: "reject", reason: 5 }), "string");
});

Deno.test("a replacement may be as long as a chat message or as the message it replaces, no longer", () => {
  const replace = (text: string, original: string) =>
    parseDecision({ status: 200, body: { action: "replace", text } }, original);
  assert.equal(typeof replace("x".repeat(MAX_TEXT_LENGTH), "short"), "object");
  assert.equal(typeof replace("x".repeat(MAX_TEXT_LENGTH + 1), "short"), "string");
  const longRaw = "r".repeat(MAX_TEXT_LENGTH * 2);
  assert.equal(typeof replace("*".repeat(longRaw.length), longRaw), "object");
  assert.equal(typeof replace("*".repeat(longRaw.length + 1), longRaw), "string");
});

Deno.test("a long reason is cut, never between the halves of a surrogate pair", () => {
  const reject = (reason: string) =>
    parseDecision({ status: 200, body: { action: "reject", reason } }, "hi") as {
      reason: string;
    };
  assert.equal(reject("r".repeat(1000)).reason.length, MAX_REASON_LENGTH);
  const emoji = "a".repeat(MAX_REASON_LENGTH - 1) + "😀";
  assert.equal(reject(emoji).reason, "a".repeat(MAX_REASON_LENGTH - 1));
});
