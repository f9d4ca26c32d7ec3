/**
 * A hub's tail of one room's stream, without sockets: messages are delivered exactly once, in
 * offset order, whatever order they come in; gaps are named for the store to fill; a stream
 * that starts over is followed from its new start.
 */
import assert from "node:assert/strict";
import type { MessageEvent } from "../src/protocol.ts";
import type { StreamPage } from "../src/store.ts";
import { Tail } from "../src/tail.ts";

function msg(offset: number): MessageEvent {
  return {
    type: "message",
    id: `m${offset}`,
    from: { id: "a", name: "A" },
    text: `t${offset}`,
    ts: 0,
    offset,
  };
}

function page(offset: number, messages: MessageEvent[], epoch = "e1"): StreamPage {
  return { epoch, offset, first: messages[0]?.offset ?? offset + 1, lost: 0, messages };
}

const offsets = (ms: MessageEvent[]) => ms.map((m) => m.offset);

Deno.test("messages that arrive before the tail is loaded are held, then delivered after the page", () => {
  const tail = new Tail(3);
  assert.deepEqual(tail.accept("e1", msg(3)), []);
  assert.deepEqual(tail.accept("e1", msg(2)), [], "held until loaded");
  assert.deepEqual(offsets(tail.load(page(2, [msg(1), msg(2)]))), [3], "2 was in the page");
  assert.equal(tail.head, 3);
  assert.deepEqual(offsets(tail.recent), [1, 2, 3]);
});

Deno.test("duplicates are dropped and out-of-order messages wait for the gap to close", () => {
  const tail = new Tail(2);
  tail.load(page(5, [msg(4), msg(5)]));
  assert.deepEqual(tail.accept("e1", msg(5)), [], "a duplicate");
  assert.deepEqual(tail.accept("e1", msg(8)), []);
  assert.deepEqual(tail.gap(), { after: 5, before: 8 });
  assert.deepEqual(offsets(tail.accept("e1", msg(6))), [6]);
  assert.deepEqual(offsets(tail.fill(page(8, [msg(7)]), { after: 6, before: 8 })), [7, 8]);
  assert.equal(tail.gap(), undefined);
  assert.deepEqual(offsets(tail.recent), [7, 8], "recent keeps the last `size`");
  assert.equal(tail.recentAfter, 6);
});

Deno.test("a gap the store no longer keeps is skipped, so delivery never waits forever", () => {
  const tail = new Tail(5);
  tail.load(page(1, [msg(1)]));
  tail.accept("e1", msg(4));
  assert.deepEqual(offsets(tail.fill(page(4, []), { after: 1, before: 4 })), [4]);
  assert.equal(tail.head, 4);
});

Deno.test("a message of a new epoch restarts the tail at that message", () => {
  const tail = new Tail(5);
  tail.load(page(9, [msg(9)]));
  assert.deepEqual(offsets(tail.accept("e2", msg(1))), [1]);
  assert.equal(tail.epoch, "e2");
  assert.deepEqual(offsets(tail.recent), [1]);
});

Deno.test("find looks a message id up among the recent messages only", () => {
  const tail = new Tail(2);
  tail.load(page(3, [msg(2), msg(3)]));
  assert.equal(tail.find("m3")?.offset, 3);
  assert.equal(tail.find("m1"), undefined);
});
