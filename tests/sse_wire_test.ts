/** The bytes of event streams (`src/sse_wire.ts`), without a server. */
import assert from "node:assert/strict";
import { epochOfWelcome, lastEventId, sseClose, SseEncoder } from "../src/sse_wire.ts";

const decoder = new TextDecoder();
const text = (chunks: Uint8Array[]) => chunks.map((c) => decoder.decode(c));

Deno.test("a frame of several events becomes one SSE message per event, ids on stored messages only", () => {
  const message = JSON.stringify({
    type: "message",
    id: "n-2",
    from: { id: "n-1", name: "a" },
    text: 'tricky ,"offset":99} text\nwith a newline',
    ts: 1,
    offset: 7,
  });
  const unstored = JSON.stringify({ type: "message", id: "n-3", from: { id: "x", name: "b" } });
  const join = JSON.stringify({ type: "join", id: "n-4", name: "c" });
  const encoded = new SseEncoder().encode([message, unstored, join].join("\n"), "ep0ch");
  assert.deepEqual(text(encoded.chunks), [
    `id: ep0ch:7\ndata: ${message}\n\n`,
    `data: ${unstored}\n\n`,
    `data: ${join}\n\n`,
  ]);
  assert.equal(encoded.bytes, encoded.chunks.reduce((n, c) => n + c.byteLength, 0));
});

Deno.test("an offset that is not the last field is still found", () => {
  const line = '{"type":"message","offset":3,"id":"x","from":{"id":"a","name":"a"},"text":"t"}';
  assert.deepEqual(text(new SseEncoder().encode(line, "e").chunks), [`id: e:3\ndata: ${line}\n\n`]);
});

Deno.test("the encoder reuses the last frame's encoding for the same frame and epoch only", () => {
  const encoder = new SseEncoder();
  const frame = '{"type":"join","id":"a","name":"a"}';
  const first = encoder.encode(frame, "e");
  assert.equal(encoder.encode(frame, "e"), first);
  assert.notEqual(encoder.encode(frame, "other"), first);
});

Deno.test("epochOfWelcome reads the epoch of a welcome frame, nothing else", () => {
  const welcome = JSON.stringify({ type: "welcome", id: "a", members: [], epoch: "abc" });
  assert.equal(epochOfWelcome(`${welcome}\n{"type":"message"}`), "abc");
  assert.equal(epochOfWelcome('{"type":"join","id":"a","name":"a"}'), undefined);
});

Deno.test("Last-Event-ID is EPOCH:OFFSET; anything malformed is ignored", () => {
  assert.deepEqual(lastEventId("abc:12"), { epoch: "abc", offset: 12 });
  assert.deepEqual(lastEventId("a:b:3"), { epoch: "a:b", offset: 3 });
  for (const bad of [null, "", "abc", ":3", "abc:", "abc:-1", "abc:1.5", `e:${"9".repeat(20)}`]) {
    assert.equal(lastEventId(bad), undefined, String(bad));
  }
});

Deno.test("the close event carries the close frame's code and reason", () => {
  assert.equal(
    decoder.decode(sseClose(1001, "server shutting down")),
    'event: close\ndata: {"code":1001,"reason":"server shutting down"}\n\n',
  );
});
