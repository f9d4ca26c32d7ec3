/**
 * Measures the SQLite backend (`src/sqlite_store.ts`) on its own, no hub around it:
 *
 *   deno run -A bench/sqlite_store.ts write        batches of 1, 10 and 100 messages
 *   deno run -A bench/sqlite_store.ts build DIR    1,000 rooms x 10,000 messages into DIR
 *   deno run -A bench/sqlite_store.ts build DIR ROOMS MESSAGES PREFIX NOW
 *                                                  ROOMS rooms named PREFIX0, PREFIX1, … of
 *                                                  MESSAGES each, the newest written at NOW
 *                                                  (ms since the epoch; `deno task bench
 *                                                  --only restart` builds its store so)
 *   deno run -A bench/sqlite_store.ts open DIR     open + first room() + read({last: 50})
 *   deno run -A bench/sqlite_store.ts sweep DIR    a sweep with nothing to do, then one that
 *                                                  deletes the oldest 1% by age (changes DIR)
 *
 * Messages carry 60 bytes of text (about 130 bytes stored as JSON). Prints one line per figure.
 * @module
 */
import type { Batch } from "../src/local_stream.ts";
import type { MessageEvent } from "../src/protocol.ts";
import { SqliteBackend, type SqliteOptions } from "../src/sqlite_store.ts";

const TEXT = "x".repeat(60);
const ROOMS = 1000;
const PER_ROOM = 10_000;
const PER_BATCH = 10; // messages per room in each batch of the build

function event(offset: number): MessageEvent {
  const e = { type: "message", id: crypto.randomUUID(), from: { id: "u1", name: "Ann" } };
  return { ...e, text: TEXT, ts: Date.now(), offset } as MessageEvent;
}

/** `size` messages spread over up to 10 rooms of 100, as one turn of a busy hub would. */
function writeBench(size: number, seconds: number, synchronous: "normal" | "full") {
  const dir = Deno.makeTempDirSync({ prefix: "chorus-bench-" });
  const options = { retainMessages: 100, retainMs: 3_600_000, retainBytes: 1e12, synchronous };
  const store = SqliteBackend.open(dir, options);
  const heads = new Array<number>(100).fill(0);
  let messages = 0, batches = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    const batch: Batch = { rooms: [], messages: [] };
    const rooms = Math.min(size, 10);
    for (let r = 0; r < rooms; r++) {
      const room = (batches * 10 + r) % 100;
      const count = Math.floor(size / rooms) + (r < size % rooms ? 1 : 0);
      for (let i = 0; i < count; i++) {
        batch.messages.push({ room: `room-${room}`, event: event(++heads[room]!) });
      }
      batch.rooms.push({ room: `room-${room}`, epoch: "e", head: heads[room]!, lost: 0 });
    }
    store.write(batch);
    messages += size;
    batches++;
  }
  const s = (performance.now() - start) / 1000;
  store.close();
  Deno.removeSync(dir, { recursive: true });
  const rate = (n: number) => Math.round(n / s).toLocaleString("en");
  console.log(
    `write, batches of ${size}, synchronous=${synchronous}: ${rate(messages)} messages/s, ` +
      `${rate(batches)} batches/s`,
  );
}

/**
 * Write `rooms` rooms (`${prefix}0`, `${prefix}1`, …) of `perRoom` messages each into
 * `dir/chorus.db`, {@link PER_BATCH} messages of every room per batch, one second apart, the
 * last batch at `end` ms (0: the clock starts at 0, which the sweep bench cuts by age). A store
 * built for chorus itself needs `end` near now: its own sweep would delete older messages.
 * `perRoom` is rounded up to a multiple of {@link PER_BATCH}.
 */
function build(dir: string, rooms = ROOMS, perRoom = PER_ROOM, prefix = "room-", end = 0) {
  const rounds = Math.ceil(perRoom / PER_BATCH);
  let clock = 0;
  const options: SqliteOptions = {
    retainMessages: rounds * PER_BATCH,
    retainMs: 1e15,
    retainBytes: 1e15,
    now: () => clock,
  };
  const store = SqliteBackend.open(dir, options);
  const start = performance.now();
  const base = end === 0 ? 0 : end - (rounds - 1) * 1000;
  for (let round = 0; round < rounds; round++) {
    clock = base + round * 1000; // a second per round: the sweep bench cuts by age
    const batch: Batch = { rooms: [], messages: [] };
    for (let r = 0; r < rooms; r++) {
      const head = (round + 1) * PER_BATCH;
      for (let o = head - PER_BATCH + 1; o <= head; o++) {
        batch.messages.push({ room: `${prefix}${r}`, event: event(o) });
      }
      batch.rooms.push({ room: `${prefix}${r}`, epoch: "e", head, lost: 0 });
    }
    store.write(batch);
  }
  const s = (performance.now() - start) / 1000;
  store.close();
  const size = Deno.statSync(`${dir}/chorus.db`).size;
  const total = rooms * rounds * PER_BATCH;
  console.log(
    `build: ${total} messages in batches of ${rooms * PER_BATCH} in ${s.toFixed(1)} s ` +
      `(${Math.round(total / s).toLocaleString("en")}/s), ` +
      `chorus.db ${(size / 1e6).toFixed(0)} MB`,
  );
}

function open(dir: string) {
  const t0 = performance.now();
  const options = { retainMessages: PER_ROOM, retainMs: 1e15, retainBytes: 1e15 };
  const store = SqliteBackend.open(dir, options);
  const t1 = performance.now();
  const room = store.room("room-500");
  const t2 = performance.now();
  const last = store.read("room-500", { last: 50 });
  const t3 = performance.now();
  if (room?.head !== PER_ROOM || last.length !== 50) throw new Error("the build is incomplete");
  const n = 2000;
  for (let i = 0; i < n; i++) store.read(`room-${(i * 7919) % ROOMS}`, { last: 50 });
  const t4 = performance.now();
  for (let i = 0; i < n; i++) {
    store.read(`room-${(i * 7919) % ROOMS}`, { after: (i * 13) % (PER_ROOM - 50), limit: 50 });
  }
  const t5 = performance.now();
  store.close();
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  console.log(
    `open ${ms(t1 - t0)}, first room() ${ms(t2 - t1)}, first read({last: 50}) ${ms(t3 - t2)}; ` +
      `then read({last: 50}) ${ms((t4 - t3) / n)} each, read({after, limit: 50}) ` +
      `${ms((t5 - t4) / n)} each (${n} rooms picked round the file)`,
  );
}

function sweep(dir: string) {
  const rounds = PER_ROOM / PER_BATCH;
  let clock = rounds * 1000;
  const retainMs = rounds * 1000 + 1;
  const store = SqliteBackend.open(dir, {
    retainMessages: PER_ROOM,
    retainMs,
    retainBytes: 1e15,
    now: () => clock,
  });
  let t = performance.now();
  store.sweep();
  console.log(`sweep with nothing to delete: ${(performance.now() - t).toFixed(2)} ms`);
  clock += rounds * 10; // the oldest 1% of rounds are now older than retainMs
  t = performance.now();
  store.sweep();
  const first = store.first("room-0");
  console.log(
    `sweep deleting the oldest 1% by age (${ROOMS * PER_ROOM / 100} messages): ` +
      `${(performance.now() - t).toFixed(0)} ms; room-0 now starts at offset ${first}`,
  );
  store.close();
}

const [mode, dir] = Deno.args;
if (mode === "write") {
  for (const size of [1, 10, 100]) writeBench(size, 3, "normal");
  for (const size of [1, 100]) writeBench(size, 3, "full");
} else if (mode === "build" && dir && Deno.args.length === 6) {
  const [rooms, perRoom, prefix, end] = Deno.args.slice(2);
  build(dir, Number(rooms), Number(perRoom), prefix, Number(end));
} else if (mode === "build" && dir) build(dir);
else if (mode === "open" && dir) open(dir);
else if (mode === "sweep" && dir) sweep(dir);
else {
  throw new Error(
    "usage: sqlite_store.ts write | build DIR [ROOMS MESSAGES PREFIX NOW] | open DIR | sweep DIR",
  );
}
