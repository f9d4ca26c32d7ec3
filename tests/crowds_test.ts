/** Crowds without sockets: when a room's presence becomes a count, and back. */
import assert from "node:assert/strict";
import { Crowds } from "../src/crowds.ts";

/** Crowds over one room whose count the test sets, recording what they tell. */
function crowds(limit: number, intervalMs: number) {
  const counts = new Map<string, number>();
  const told: string[] = [];
  let wake: (() => void) | undefined;
  const c = new Crowds({
    limit,
    intervalMs,
    count: (room) => counts.get(room) ?? 0,
    onCount: (room, n) => {
      told.push(`${room} count ${n}`);
      wake?.();
    },
    onSmall: (room, n) => {
      told.push(`${room} small ${n}`);
      wake?.();
    },
  });
  /** Set the count and report the change, as the hub does after each join or leave. */
  const change = (room: string, n: number) => {
    counts.set(room, n);
    return c.changed(room);
  };
  /** The next thing told, however long the interval makes it wait. */
  const next = () => new Promise<void>((resolve) => wake = resolve);
  return { c, change, told, next };
}

Deno.test("a room within the limit is announced member by member", () => {
  const { c, change, told } = crowds(3, 1000);
  for (let n = 1; n <= 3; n++) assert.equal(change("/r", n), true);
  assert.equal(change("/r", 2), true, "a leave too");
  assert.equal(c.has("/r"), false);
  assert.deepEqual(told, []);
  c.dispose();
});

Deno.test("passing the limit makes a crowd at once and tells its count on the same turn", () => {
  const { c, change, told } = crowds(3, 1000);
  change("/r", 3);
  assert.equal(change("/r", 4), false);
  assert.equal(c.has("/r"), true);
  assert.deepEqual(told, ["/r count 4"]);
  c.dispose();
});

Deno.test("a crowd's counts are coalesced to one per interval, and unchanged ones are not told", async () => {
  const { c, change, told, next } = crowds(3, 30);
  change("/r", 4);
  const later = next();
  for (let n = 5; n <= 9; n++) assert.equal(change("/r", n), false);
  assert.deepEqual(told, ["/r count 4"], "nothing more within the interval");
  await later;
  assert.deepEqual(told, ["/r count 4", "/r count 9"], "one count for five changes");
  // A join and a leave within an interval: the count is what was told, so nothing is sent.
  change("/r", 10);
  change("/r", 9);
  const quiet = next();
  change("/r", 11);
  await quiet;
  assert.deepEqual(told, ["/r count 4", "/r count 9", "/r count 11"]);
  c.dispose();
});

Deno.test("a crowd that shrinks to the limit is sent the whole list once, then is small again", async () => {
  const { c, change, told, next } = crowds(3, 20);
  change("/r", 4);
  const small = next();
  assert.equal(change("/r", 3), false, "the leave that brings it to the limit is not announced");
  await small;
  assert.deepEqual(told, ["/r count 4", "/r small 3"]);
  assert.equal(c.has("/r"), false);
  assert.equal(change("/r", 2), true, "per-member events resume");
  c.dispose();
});

Deno.test("rooms are counted apart, and dispose stops what is pending", () => {
  const { c, change, told } = crowds(1, 1000);
  change("/a", 2);
  change("/b", 5);
  assert.deepEqual(told, ["/a count 2", "/b count 5"], "one room's interval does not hold another");
  change("/b", 6);
  c.dispose(); // the pending count of /b must not fire (the test's timer sanitizer checks)
  assert.equal(c.has("/b"), false);
  assert.equal(change("/b", 1), true, "a disposed crowd is forgotten");
  assert.deepEqual(told, ["/a count 2", "/b count 5"]);
});
