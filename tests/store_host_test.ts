/**
 * The store host of `--workers` in one thread: a {@link StoreHost} over a memory
 * {@link LocalStream} and two {@link RemoteStream}s on channels of their own, as two workers
 * would have them.
 */
import assert from "node:assert/strict";
import { LocalStream } from "../src/local_stream.ts";
import { createLogger } from "../src/log.ts";
import { MemoryBackend } from "../src/memory_store.ts";
import { C, clearGauges, Metrics, metricsTable } from "../src/metrics.ts";
import type { MessageEvent } from "../src/protocol.ts";
import type { Appended, Frame } from "../src/store.ts";
import { type PostOptions, RemoteStream, StoreHost } from "../src/store_host.ts";

/** What one remote heard, per room: `offset:text` for messages, `bin:N` for bytes. */
type Heard = Map<string, string[]>;

interface Setup {
  host: StoreHost;
  local: LocalStream;
  remotes: RemoteStream[];
  heard: Heard[];
  row: Float64Array;
  logs: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

function memory(): MemoryBackend {
  return new MemoryBackend({ retainMessages: 1000, retainMs: 3600_000, maxBytes: 1 << 24 });
}

function setup(
  remotes = 2,
  options: PostOptions = {},
  backend = memory(),
  row = new Metrics().row,
): Setup {
  const logs: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) });
  const local = new LocalStream({ backend });
  const host = new StoreHost(local, log, row, options);
  const heard: Heard[] = [];
  const streams = Array.from({ length: remotes }, (_, i) => {
    const channel = new MessageChannel();
    host.attach(channel.port1);
    const remote = new RemoteStream(channel.port2, options);
    const mine: Heard = new Map();
    heard[i] = mine;
    remote.listen((room, _epoch, frame) => {
      const list = mine.get(room) ?? [];
      mine.set(room, list);
      list.push(describe(frame));
    });
    return remote;
  });
  return {
    host,
    local,
    remotes: streams,
    heard,
    row,
    logs,
    async [Symbol.asyncDispose]() {
      await Promise.all(streams.map((r) => r.close()));
      await host.close();
    },
  };
}

function describe(frame: Frame): string {
  return frame instanceof Uint8Array ? `bin:${frame[0]}` : `${frame.offset}:${frame.text}`;
}

let ids = 0;
function message(text: string): MessageEvent {
  return { type: "message", id: `m${++ids}`, from: { id: "u", name: "u" }, text, ts: Date.now() };
}

/** Resolves once every remote heard `n` frames of `room`. */
async function heardAll(s: Setup, room: string, n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (s.heard.some((h) => (h.get(room)?.length ?? 0) < n)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} frames of ${room}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

Deno.test("concurrent appends from two workers: both hear one order, consecutive, each sender's kept", async () => {
  await using s = setup();
  const perSender = 200;
  // Interleave the two senders over several turns, as two workers' hubs would.
  for (let k = 0; k < perSender; k += 20) {
    for (let j = k; j < k + 20; j++) {
      s.remotes[0]!.append("/r", message(`a${j}`));
      s.remotes[1]!.append("/r", message(`b${j}`));
    }
    await new Promise((r) => setTimeout(r, 0));
  }
  await heardAll(s, "/r", 2 * perSender);
  const [one, two] = s.heard.map((h) => h.get("/r")!);
  assert.deepEqual(one, two);
  assert.equal(one!.length, 2 * perSender);
  one!.forEach((entry, i) => assert.equal(Number(entry.split(":")[0]), i + 1));
  for (const sender of ["a", "b"]) {
    const texts = one!.map((e) => e.split(":")[1]!).filter((t) => t.startsWith(sender));
    assert.deepEqual(texts, Array.from({ length: perSender }, (_, j) => `${sender}${j}`));
  }
});

Deno.test("done hears each message's position; reads by after, before and last are answered", async () => {
  await using s = setup();
  const results = await Promise.all(
    Array.from(
      { length: 5 },
      (_, i) =>
        new Promise<Appended>((resolve) =>
          s.remotes[i % 2]!.append("/d", message(`t${i}`), resolve)
        ),
    ),
  );
  const epoch = results[0]!.epoch;
  assert.ok(results.every((r) => r?.epoch === epoch));
  const offsets = results.map((r) => r!.offset);
  assert.deepEqual(offsets.toSorted(), [1, 2, 3, 4, 5]);
  // Each worker's own messages in the order it sent them.
  assert.ok(offsets[0]! < offsets[2]! && offsets[2]! < offsets[4]! && offsets[1]! < offsets[3]!);
  const textAt = (offset: number) => `t${offsets.indexOf(offset)}`;

  const last = await s.remotes[1]!.read("/d", { last: 2 });
  assert.equal(last.epoch, epoch);
  assert.equal(last.offset, 5);
  assert.equal(last.first, 1);
  assert.deepEqual(last.messages.map((m) => m.offset), [4, 5]);
  const after = await s.remotes[0]!.read("/d", { after: 1, limit: 2 });
  assert.deepEqual(after.messages.map((m) => m.text), [textAt(2), textAt(3)]);
  const before = await s.remotes[0]!.read("/d", { before: 4, limit: 10 });
  assert.deepEqual(before.messages.map((m) => m.offset), [3, 2, 1]);
  const empty = await s.remotes[0]!.read("/none", { last: 3 });
  assert.equal(empty.offset, 0);
  assert.deepEqual(empty.messages, []);
});

Deno.test("a read's answer comes after every frame up to the head it reports", async () => {
  await using s = setup();
  let reads = 0;
  for (let round = 0; round < 30; round++) {
    for (let i = 0; i < 7; i++) s.remotes[1]!.append("/h", message(`x${round}.${i}`));
    if (round % 3 === 0) await new Promise((r) => setTimeout(r, 0));
    const page = await s.remotes[0]!.read("/h", { last: 1 });
    const heard = s.heard[0]!.get("/h") ?? [];
    // Heard in order with no gap, so "every frame up to the head" is "at least head frames".
    assert.ok(heard.length >= page.offset, `read ${round}: head ${page.offset}, heard ${heard}`);
    if (page.offset > 0) reads++;
  }
  assert.ok(reads > 0);
});

Deno.test("binary frames keep their place among the text of the room", async () => {
  await using s = setup();
  for (let i = 0; i < 10; i++) {
    s.remotes[i % 2]!.append("/b", message(`t${i}`));
    s.remotes[(i + 1) % 2]!.append("/b", new Uint8Array([i, 1, 2]));
  }
  await heardAll(s, "/b", 20);
  const [one, two] = s.heard.map((h) => h.get("/b")!);
  assert.deepEqual(one, two);
  // Each sender's own sequence of text and bytes is kept; bytes carry no offset.
  for (const sender of [0, 1]) {
    const sent = Array.from({ length: 10 }, (_, i) => (i % 2 === sender ? `t${i}` : `bin:${i}`));
    const got = one!.map((e) => e.replace(/^\d+:/, "")).filter((e) => sent.includes(e));
    assert.deepEqual(got, sent);
  }
  const offsets = one!.filter((e) => !e.startsWith("bin:")).map((e) => Number(e.split(":")[0]));
  assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

Deno.test("a worker that closes gets its dones first; later reads fail; the others go on", async () => {
  await using s = setup();
  const [gone, stays] = s.remotes as [RemoteStream, RemoteStream];
  const done = new Promise<Appended>((resolve) => gone.append("/c", message("last"), resolve));
  const pending = gone.read("/c", { last: 1 });
  await gone.close();
  assert.equal((await done)?.offset, 1);
  assert.equal((await pending).offset, 0, "answered before the append was stored");
  await assert.rejects(gone.read("/c", { last: 1 }), /closed/);
  assert.throws(() => gone.append("/c", message("late")), /closed/);
  stays.append("/c", message("after"));
  await heardAll({ ...s, heard: [s.heard[1]!] }, "/c", 2);
  assert.deepEqual(s.heard[1]!.get("/c"), ["1:last", "2:after"]);
  assert.equal(s.row[C.storeErrors], 0);
});

Deno.test("a detached port (a crashed worker) stops hearing; what it sent is still stored", async () => {
  const s = setup();
  const channel = new MessageChannel();
  s.host.attach(channel.port1);
  const crashed = new RemoteStream(channel.port2);
  crashed.append("/x", message("from the dead"));
  await new Promise((r) => setTimeout(r, 0));
  s.host.detach(channel.port1);
  s.host.detach(channel.port1); // twice, as a crash and a stop both may
  await heardAll(s, "/x", 1);
  assert.deepEqual(s.heard[0]!.get("/x"), ["1:from the dead"]);
  channel.port2.close();
  await s[Symbol.asyncDispose]();
});

Deno.test("an append the store refuses goes out unnumbered, logged and counted in the host's row, which /metrics sums with the workers'", async () => {
  // Two workers' rows, then the host's, as startCluster allocates them.
  const table = metricsTable(3);
  const [worker0, worker1] = [new Metrics(table, 0), new Metrics(table, 1)];
  worker0.row[C.chatConnections] = 2;
  class Unreadable extends MemoryBackend {
    override room(room: string): never {
      throw new Error(`cannot read ${room}\nsecond line`);
    }
  }
  const backend = new Unreadable({ retainMessages: 10, retainMs: 60_000, maxBytes: 1 << 20 });
  await using s = setup(2, {}, backend, new Metrics(table, 2).row);
  const result = await new Promise<Appended>((resolve) =>
    s.remotes[0]!.append("/e", message("lost"), resolve)
  );
  assert.equal(result, null);
  await heardAll(s, "/e", 1);
  assert.deepEqual(s.heard.map((h) => h.get("/e")), [["undefined:lost"], ["undefined:lost"]]);
  assert.match(s.logs.join(), /store append failed.*cannot read \/e"/);
  await assert.rejects(
    s.remotes[1]!.read("/e", { last: 1 }),
    /store read failed: cannot read \/e$/,
  );
  clearGauges(table, 0); // worker 0 crashed: its gauges go, the host's counters stay
  const text = worker1.render(0);
  assert.match(text, /^chorus_store_write_errors_total 1$/m);
  assert.match(text, /^chorus_store_unstored_messages_total 1$/m);
  assert.match(text, /^chorus_connections\{mode="chat",transport="websocket"\} 0$/m);
});
