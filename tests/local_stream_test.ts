/**
 * The stream store of one process over its memory backend: offsets and epochs, one batch per
 * turn handed out only after it is written, reads, and what a failed write does.
 */
import assert from "node:assert/strict";
import { type Backend, type Batch, LocalStream } from "../src/local_stream.ts";
import { MemoryBackend } from "../src/memory_store.ts";
import type { MessageEvent } from "../src/protocol.ts";
import type { Frame } from "../src/store.ts";

function msg(text: string): MessageEvent {
  return { type: "message", id: text, from: { id: "a", name: "A" }, text, ts: Date.now() };
}

/** A memory backend whose writes go through `write` (which may fail, or count). */
function wrapped(backend: MemoryBackend, write: (batch: Batch) => void): Backend {
  return {
    room: (room) => backend.room(room),
    write,
    read: (room, query) => backend.read(room, query),
    first: (room) => backend.first(room),
    sweep: () => backend.sweep(),
    close: () => backend.close(),
  };
}

function memory(retainMessages = 100): MemoryBackend {
  return new MemoryBackend({ retainMessages, retainMs: 3600_000, maxBytes: 1 << 20 });
}

Deno.test("each room numbers its messages from 1 and hands them out after one write per flush", () => {
  const backend = memory();
  let writes = 0;
  const counting = wrapped(backend, (batch) => {
    writes++;
    backend.write(batch);
  });
  const stream = new LocalStream({ backend: counting });
  const got: [string, number | undefined][] = [];
  stream.listen((room, _epoch, frame) => {
    if (!(frame instanceof Uint8Array)) got.push([room, frame.offset]);
  });
  for (const text of ["a", "b"]) stream.append("/x", msg(text));
  stream.append("/y", msg("c"));
  assert.deepEqual(got, [], "nothing goes out before it is written");
  stream.flush();
  assert.equal(writes, 1, "one write for the whole batch");
  assert.deepEqual(got, [["/x", 1], ["/x", 2], ["/y", 1]]);
  stream.close();
});

Deno.test("reads see stored messages; an empty room gets an epoch that stays", () => {
  const stream = new LocalStream({ backend: memory(3) });
  const empty = stream.read("/r", { last: 5 });
  assert.equal(empty.offset, 0);
  for (const t of ["1", "2", "3", "4", "5"]) stream.append("/r", msg(t));
  assert.equal(stream.read("/r", { last: 5 }).offset, 0, "pending messages are not read");
  stream.flush();
  const page = stream.read("/r", { last: 5 });
  assert.equal(page.epoch, empty.epoch);
  assert.equal(page.offset, 5);
  assert.equal(page.first, 3, "retention kept the last 3");
  assert.deepEqual(page.messages.map((m) => m.offset), [3, 4, 5]);
  assert.deepEqual(stream.read("/r", { after: 3, limit: 1 }).messages.map((m) => m.text), ["4"]);
  assert.deepEqual(stream.read("/r", { before: 5, limit: 9 }).messages.map((m) => m.text), [
    "4",
    "3",
  ]);
  stream.close();
});

Deno.test("a failed write delivers its messages unnumbered, marks the loss, and numbering goes on", () => {
  const backend = memory();
  let fail = true;
  const flaky = wrapped(backend, (batch) => {
    if (fail && batch.messages.length > 0) throw new Error("database or disk is full");
    backend.write(batch);
  });
  const errors: (string | undefined)[] = [];
  const stream = new LocalStream({
    backend: flaky,
    onWriteError: (err, n) => errors.push(err && `${err.message} (${n})`),
  });
  const got: Frame[] = [];
  stream.listen((_room, _epoch, frame) => got.push(frame));
  const done: unknown[] = [];
  stream.append("/r", msg("stored"), (r) => done.push(r));
  fail = false;
  stream.flush();
  fail = true;
  stream.append("/r", msg("lost"), (r) => done.push(r));
  stream.flush();
  fail = false;
  stream.append("/r", msg("after"), (r) => done.push(r));
  stream.flush();
  assert.deepEqual(got.map((f) => (f as MessageEvent).offset), [1, undefined, 2]);
  assert.equal(done[1] as null, null);
  assert.deepEqual(errors, ["database or disk is full (1)", undefined]);
  const page = stream.read("/r", { after: 0, limit: 10 });
  assert.equal(page.lost, 1, "a resume from offset 1 or before is not complete");
  assert.deepEqual(page.messages.map((m) => m.text), ["stored", "after"]);
  stream.close();
});

Deno.test("binary frames keep their place among a room's messages but are not stored", () => {
  const stream = new LocalStream({ backend: memory() });
  const got: string[] = [];
  stream.listen((_r, _e, f) => got.push(f instanceof Uint8Array ? "bytes" : f.text));
  stream.append("/r", msg("a"));
  stream.append("/r", new Uint8Array([1]));
  stream.append("/r", msg("b"));
  stream.flush();
  assert.deepEqual(got, ["a", "bytes", "b"]);
  assert.equal(stream.read("/r", { last: 9 }).messages.length, 2);
  stream.close();
});

Deno.test("with a commit interval, messages of many turns share one write; a quiet store writes at once", async () => {
  const backend = memory();
  let writes = 0;
  const stream = new LocalStream({
    backend: wrapped(backend, (batch) => {
      writes++;
      backend.write(batch);
    }),
    commitIntervalMs: 200,
  });
  let seen = 0;
  let arrived = () => {};
  stream.listen(() => {
    seen++;
    arrived();
  });
  const until = (n: number) =>
    new Promise<void>((resolve) => {
      arrived = () => seen >= n && resolve();
    });
  const first = until(1);
  stream.append("/r", msg("quiet"));
  await first;
  assert.equal(writes, 1, "the first message is written on the next turn");
  const rest = until(11);
  for (let i = 0; i < 10; i++) {
    stream.append("/r", msg(`busy ${i}`));
    await new Promise((turn) => setTimeout(turn, 0)); // ten separate turns of the event loop
  }
  await rest;
  assert.equal(writes, 2, "ten turns' messages in one write, after the interval");
  stream.close();
});
