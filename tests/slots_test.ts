/** Connection slots and the rooms a hub watches on its bus, in-process. */
import assert from "node:assert/strict";
import type { Bus, BusMessage } from "../src/bus.ts";
import { ConnectionLimiter } from "../src/limiter.ts";
import { Slots } from "../src/slots.ts";
import { RoomWatches } from "../src/watches.ts";

Deno.test("a held slot counts until its peer finished closing; releaseAll frees the rest", () => {
  const limiter = new ConnectionLimiter(2, 2);
  const slots = new Slots<string>(limiter);
  assert.equal(slots.acquire("a"), "ok");
  assert.equal(slots.acquire("a"), "ok");
  assert.equal(slots.acquire("a"), "max_connections");
  slots.hold("dropped", "a"); // the server closed it; its peer has not answered yet
  slots.release("a"); // the other one closed cleanly
  assert.equal(limiter.total, 1, "the held slot still counts");
  slots.released("dropped");
  slots.released("dropped"); // a second report changes nothing
  assert.equal(limiter.total, 0);
  slots.acquire("b");
  slots.hold("x", "b");
  slots.releaseAll();
  assert.equal(limiter.total, 0);
});

/** A bus whose `watch` resolves when the test says so, recording watch and unwatch calls. */
function watchingBus() {
  const calls: string[] = [];
  const pending = new Map<string, () => void>();
  const bus: Bus = {
    publish(_m: BusMessage) {},
    subscribe() {},
    close() {},
    watch(room) {
      calls.push(`watch ${room}`);
      return new Promise((resolve) => pending.set(room, resolve));
    },
    unwatch(room) {
      calls.push(`unwatch ${room}`);
    },
  };
  return { bus, calls, pending };
}

Deno.test("a room is watched once for its first member and let go after its last", async () => {
  const { bus, calls, pending } = watchingBus();
  const watches = new RoomWatches(bus);
  watches.watch("/r");
  watches.watch("/r");
  const ready = watches.ready("/r");
  assert.ok(ready, "the room is not ready until the bus has it");
  assert.equal(watches.has("/r"), true);
  pending.get("/r")!();
  await ready;
  assert.equal(watches.ready("/r"), undefined, "ready once the watch resolved");
  watches.unwatch("/r");
  assert.deepEqual(calls, ["watch /r"]);
  watches.unwatch("/r");
  assert.deepEqual(calls, ["watch /r", "unwatch /r"]);
  assert.equal(watches.has("/r"), false);
});

Deno.test("without a bus that watches, every room is always ready, and still counted", () => {
  const watches = new RoomWatches({ publish() {}, subscribe() {}, close() {} });
  watches.watch("/r");
  assert.equal(watches.ready("/r"), undefined);
  assert.equal(watches.has("/r"), true, "the hub follows the room's stream while it has members");
  watches.unwatch("/r");
  assert.equal(watches.has("/r"), false);
});
