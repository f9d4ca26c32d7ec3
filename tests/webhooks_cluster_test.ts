/**
 * Webhooks of whole processes, run exactly as `deno task start` runs them: SIGTERM delivers
 * what is queued; with `--workers 2` and with two instances on a real `redis-server`, every
 * room gets one `room.occupied` and one `room.vacated`, not one per worker or instance, and
 * each member's events once. A real receiver in the test gets the requests.
 */
import assert from "node:assert/strict";
import {
  chatClient,
  type Event,
  type MainProcess,
  redisMissing,
  startMain,
  startRedis,
  waitFor,
} from "./helpers.ts";
import { type Receiver, signedWith, startReceiver } from "./hook_receiver.ts";

const SECRET = "webhook-secret-for-tests-0123456789";

function webhookArgs(receiver: Receiver, vacateDelay: number): string[] {
  return [
    "--webhook-url",
    receiver.url(),
    "--webhook-secret",
    SECRET,
    "--webhook-vacate-delay",
    String(vacateDelay),
  ];
}

async function connections(main: MainProcess): Promise<number> {
  return (await (await fetch(`${main.url}healthz`)).json()).connections;
}

/** Every event the receiver has got so far, every request's signature checked. */
async function received(receiver: Receiver): Promise<Event[]> {
  const events: Event[] = [];
  while (receiver.requests.size > 0) {
    const req = await receiver.requests.next();
    assert.ok(await signedWith(req, SECRET));
    events.push(...req.body.events);
  }
  return events;
}

/** SIGTERM a process and expect it to exit 0. */
async function terminate(main: MainProcess): Promise<void> {
  main.child.kill("SIGTERM");
  const out = await main.output();
  assert.equal(out.code, 0, out.stderr);
}

/**
 * Members in `rooms`, `perRoom` each, over `mains` in turn; once every process counts them
 * all, they leave. Resolves once a `room.vacated` came for every room; returns every event.
 */
async function comeAndGo(
  receiver: Receiver,
  mains: MainProcess[],
  rooms: string[],
  perRoom: number,
): Promise<Event[]> {
  const clients = [];
  for (const room of rooms) {
    for (let i = 0; i < perRoom; i++) {
      const main = mains[i % mains.length]!;
      clients.push((await chatClient(`ws://127.0.0.1:${main.port}${room}`)).client);
    }
  }
  const all = rooms.length * perRoom;
  for (const main of mains) {
    await waitFor(async () => await connections(main) === all, `every hub counts ${all}`);
  }
  await Promise.all(clients.map((c) => c.close()));
  const events: Event[] = [];
  while (events.filter((e) => e.type === "room.vacated").length < rooms.length) {
    events.push(...(await receiver.requests.next("the vacancies")).body.events);
  }
  return events;
}

/** One occupied, then one vacated, per room, and each member's joined and left once. */
function assertOncePerRoom(events: Event[], rooms: string[], perRoom: number): void {
  for (const room of rooms) {
    const of = events.filter((e) => e.room === room);
    const types = of.map((e) => e.type);
    assert.deepEqual(types.filter((t) => t.startsWith("room.")), ["room.occupied", "room.vacated"]);
    const joined = of.filter((e) => e.type === "member.joined").map((e) => e.id).sort();
    const left = of.filter((e) => e.type === "member.left").map((e) => e.id).sort();
    assert.equal(joined.length, perRoom, `${room}: one joined per member`);
    assert.equal(new Set(joined).size, perRoom);
    assert.deepEqual(left, joined, `${room}: one left per member`);
  }
}

Deno.test("SIGTERM delivers the queued events, the vacancy included, before the process exits", async () => {
  const receiver = startReceiver();
  try {
    // The default batch time (1 s) and a vacate delay no test would wait for.
    const main = await startMain(webhookArgs(receiver, 600));
    const { client, welcome } = await chatClient(`ws://127.0.0.1:${main.port}/bye`);
    const started = Date.now();
    await terminate(main);
    assert.ok(Date.now() - started < 5000, "the shutdown is bounded");
    await client.closed;
    const events = await received(receiver);
    assert.deepEqual(events.map((e) => `${e.type} ${e.room} ${e.id ?? ""}`.trim()), [
      "room.occupied /bye",
      `member.joined /bye ${welcome.id}`,
      `member.left /bye ${welcome.id}`,
      "room.vacated /bye",
    ]);
  } finally {
    await receiver.close();
  }
});

Deno.test("with --workers 2, each room gets one occupied and one vacated, from its owning worker", async () => {
  const receiver = startReceiver();
  try {
    const main = await startMain(["--workers", "2", ...webhookArgs(receiver, 0.1)]);
    const rooms = ["/w-a", "/w-b", "/w-c", "/w-d"];
    try {
      // Three members a room: the kernel spreads connections, so most rooms have members on
      // both workers, and most have some on the worker that does not own them.
      const events = await comeAndGo(receiver, [main], rooms, 3);
      await terminate(main);
      assertOncePerRoom([...events, ...await received(receiver)], rooms, 3);
    } finally {
      await main.stop();
    }
  } finally {
    await receiver.close();
  }
});

const missing = await redisMissing();

Deno.test({
  name: missing
    ? `two instances on Redis: one occupied and one vacated per room, not two (ignored: ${missing})`
    : "two instances on Redis: one occupied and one vacated per room, not two",
  ignore: missing !== undefined,
  async fn() {
    const receiver = startReceiver();
    const redis = await startRedis();
    const mains: MainProcess[] = [];
    try {
      const args = ["--redis-url", redis.url, ...webhookArgs(receiver, 0.2)];
      mains.push(await startMain(args), await startMain(args));
      const rooms = ["/r-a", "/r-b"];
      // Two members a room, one on each instance: both see each transition, one sends it.
      const events = await comeAndGo(receiver, mains, rooms, 2);
      await Promise.all(mains.map(terminate));
      assertOncePerRoom([...events, ...await received(receiver)], rooms, 2);
    } finally {
      await Promise.all(mains.map((m) => m.stop()));
      await redis.kill();
      await receiver.close();
    }
  },
});
