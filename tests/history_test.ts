/** The in-memory history store: bounds, positions, expiry, all on an injected clock. */
import assert from "node:assert/strict";
import { MemoryHistory, type MemoryHistoryOptions } from "../src/history.ts";
import type { MessageEvent } from "../src/protocol.ts";

function store(options: Partial<MemoryHistoryOptions> = {}) {
  const clock = { now: 1_000_000 };
  const occupied = new Set<string>();
  const history = new MemoryHistory({
    limit: 3,
    ttlMs: 60_000,
    maxBytes: Infinity,
    occupied: (room) => occupied.has(room),
    now: () => clock.now,
    reorderWindowMs: 0,
    ...options,
  });
  return { history, clock, occupied };
}

let seq = 0;
function message(text: string, id = `n1-${++seq}`, ts = 0): MessageEvent {
  return { type: "message", id, from: { id: "a", name: "A" }, text, ts };
}

const texts = (r: { messages: MessageEvent[] }) => r.messages.map((m) => m.text);

Deno.test("append keeps the newest `limit` messages of each room, oldest first", () => {
  const { history } = store();
  for (const t of ["1", "2", "3", "4"]) history.append("/r", message(t));
  history.append("/other", message("x"));
  assert.deepEqual(texts(history.after("/r")), ["2", "3", "4"]);
  assert.deepEqual(texts(history.after("/other")), ["x"]);
  assert.deepEqual(history.after("/none"), { messages: [], recovered: true });
});

Deno.test("a limit of 0 keeps nothing", () => {
  const { history } = store({ limit: 0 });
  history.append("/r", message("1"));
  assert.deepEqual(history.after("/r").messages, []);
  assert.equal(history.bytes, 0);
});

Deno.test("after(id) returns what followed a kept id; an id no longer kept is not recovered", () => {
  const { history } = store();
  const [a, b, c] = [message("a"), message("b"), message("c")];
  for (const m of [a, b, c]) history.append("/r", m);
  assert.deepEqual(history.after("/r", a.id), { messages: [b, c], recovered: true });
  assert.deepEqual(history.after("/r", c.id), { messages: [], recovered: true });
  history.append("/r", message("d")); // a is trimmed
  assert.deepEqual(texts(history.after("/r", a.id)), ["b", "c", "d"]);
  assert.equal(history.after("/r", a.id).recovered, false);
});

Deno.test("the byte budget evicts the least recently used room's oldest messages first", () => {
  const { history } = store({ limit: 100, maxBytes: 3 * 170 });
  history.append("/cold", message("c1"));
  history.append("/cold", message("c2"));
  history.append("/hot", message("h1"));
  history.append("/hot", message("h2")); // over budget: /cold was used least recently
  assert.deepEqual(texts(history.after("/cold")), ["c2"]);
  assert.deepEqual(texts(history.after("/hot")), ["h1", "h2"]);
  assert.ok(history.bytes <= 3 * 170);
});

Deno.test("an empty room's history expires after the TTL; an occupied one never does", () => {
  const { history, clock, occupied } = store();
  occupied.add("/busy");
  history.append("/busy", message("stays"));
  history.append("/quiet", message("goes")); // nobody in /quiet: its TTL starts now
  clock.now += 60_001;
  history.expire();
  assert.deepEqual(texts(history.after("/busy")), ["stays"]);
  assert.deepEqual(texts(history.after("/quiet")), []);
  assert.equal(history.bytes > 0, true);
});

Deno.test("vacated starts the TTL, occupied stops it, and a read checks it too", () => {
  const { history, clock } = store();
  history.append("/r", message("1"));
  history.occupied("/r");
  clock.now += 120_000;
  assert.deepEqual(texts(history.after("/r")), ["1"], "occupied: kept however long");
  history.vacated("/r");
  clock.now += 59_000;
  assert.deepEqual(texts(history.after("/r")), ["1"], "within the TTL");
  clock.now += 2_000;
  assert.deepEqual(texts(history.after("/r")), [], "a read past the TTL finds nothing");
  assert.equal(history.bytes, 0);
});

Deno.test("replace swaps a room's messages for a shared store's copy, within the limit", () => {
  const { history } = store();
  history.append("/r", message("local"));
  history.replace("/r", ["1", "2", "3", "4"].map((t) => message(t)));
  assert.deepEqual(texts(history.after("/r")), ["2", "3", "4"]);
});

Deno.test("with a reorder window, recovery resends other hubs' messages just before the id", () => {
  const { history } = store({ limit: 10, reorderWindowMs: 1000 });
  const old = message("old", "n2-1", 0);
  const near = message("near", "n2-2", 9_500);
  const own = message("own", "n1-9", 9_600);
  const mine = message("seen", "n1-10", 10_000);
  const later = message("later", "n2-3", 10_100);
  for (const m of [old, near, own, mine, later]) history.append("/r", m);
  // near came from another hub within the window; own is the client's hub's and was seen.
  assert.deepEqual(history.after("/r", mine.id), { messages: [near, later], recovered: true });
});
