/**
 * Room and member events (`src/room_events.ts`) without sockets: a hub's presence changes are
 * played by hand into {@link RoomEvents}, whose events land in a queue that delivers them in
 * order, as the webhook queue does. The Redis claim runs against a real `redis-server`.
 */
import assert from "node:assert/strict";
import type { Member } from "../src/hub.ts";
import { createLogger } from "../src/log.ts";
import { Metrics } from "../src/metrics.ts";
import { RedisBus } from "../src/redis_bus.ts";
import {
  EVERY_ROOM,
  type Occupancy,
  ownedRooms,
  RoomEvents,
  roomOwner,
  type RoomState,
} from "../src/room_events.ts";
import type { Reservation, WebhookEvent } from "../src/webhooks.ts";
import { Inbox, redisMissing, startRedis, waitFor } from "./helpers.ts";

type Slot = { event?: WebhookEvent; state: "ready" | "pending" | "cancelled" };

/** A queue like the webhook queue: events come out in order, waiting at reserved places. */
class Sink {
  readonly arrived = new Inbox<WebhookEvent>();
  readonly #slots: Slot[] = [];
  #sent = 0;
  readonly #types: Set<string>;

  constructor(types = ["room.occupied", "room.vacated", "member.joined", "member.left"]) {
    this.#types = new Set(types);
  }

  wants(type: string): boolean {
    return this.#types.has(type);
  }

  push(event: WebhookEvent): void {
    this.#slots.push({ event, state: "ready" });
    this.#flush();
  }

  reserve(): Reservation {
    const slot: Slot = { state: "pending" };
    this.#slots.push(slot);
    return {
      fill: (event) => {
        slot.event = event;
        slot.state = "ready";
        this.#flush();
      },
      cancel: () => {
        slot.state = "cancelled";
        this.#flush();
      },
    };
  }

  /** The next event's type and room, and, for a member event, its member id. */
  async next(): Promise<string> {
    const e = await this.arrived.next("a webhook event");
    return [e.type, e.room, e.id].filter((x) => x !== undefined).join(" ");
  }

  #flush(): void {
    while (this.#sent < this.#slots.length && this.#slots[this.#sent]!.state !== "pending") {
      const slot = this.#slots[this.#sent++]!;
      if (slot.state === "ready") this.arrived.push(slot.event!);
    }
  }
}

const quiet = createLogger({ level: "error", format: "json", write: () => {} });

function member(id: string, room = "/r", extra: Partial<Member> = {}): Member {
  return { id, name: `name-${id}`, mode: "chat", room, ...extra } as Member;
}

function events(
  sink: Sink,
  occupancy: Occupancy = EVERY_ROOM,
  vacateDelayMs = 0,
  logs: string[] = [],
): RoomEvents {
  return new RoomEvents({
    sink,
    occupancy,
    vacateDelayMs,
    log: createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) }),
    claimRetryMs: 5,
  });
}

Deno.test("the first member sends occupied then joined; the last, left then vacated after the delay", async () => {
  const sink = new Sink();
  const room = events(sink, EVERY_ROOM, 40);
  const a = member("a");
  room.joined(a);
  room.joined(member("b"));
  assert.equal(await sink.next(), "room.occupied /r");
  assert.equal(await sink.next(), "member.joined /r a");
  assert.equal(await sink.next(), "member.joined /r b");
  room.left(a, "client", true);
  room.left(member("b"), "client", false);
  assert.equal(await sink.next(), "member.left /r a");
  const left = await sink.arrived.next();
  assert.equal(left.reason, "client");
  const vacated = await sink.arrived.next("the vacated event");
  assert.equal(vacated.type, "room.vacated");
  assert.ok(vacated.ts - left.ts >= 40, `vacated ${vacated.ts - left.ts} ms after the leave`);
  await room.close(Date.now());
});

Deno.test("a leave and a rejoin within the vacate delay send neither vacated nor a second occupied", async () => {
  const sink = new Sink();
  const room = events(sink, EVERY_ROOM, 50);
  room.joined(member("a"));
  room.left(member("a"), "client", false);
  room.joined(member("a2")); // the reload
  room.left(member("a2"), "client", false);
  const seen = [];
  for (;;) {
    const e = await sink.next();
    seen.push(e);
    if (e.startsWith("room.vacated")) break;
  }
  assert.deepEqual(seen, [
    "room.occupied /r",
    "member.joined /r a",
    "member.left /r a",
    "member.joined /r a2",
    "member.left /r a2",
    "room.vacated /r",
  ]);
  assert.equal(sink.arrived.size, 0);
  await room.close(Date.now());
});

Deno.test("members of other hubs keep a room occupied", async () => {
  const sink = new Sink(["room.occupied", "room.vacated"]);
  const room = events(sink);
  room.presence("/r", true); // someone on another hub
  assert.equal(await sink.next(), "room.occupied /r");
  room.joined(member("a"));
  room.left(member("a"), "client", true); // the other hub's member is still there
  room.presence("/r", false);
  assert.equal(await sink.next(), "room.vacated /r");
  assert.equal(sink.arrived.size, 0, "one occupied, one vacated");
  await room.close(Date.now());
});

Deno.test("among workers, only a room's owner sends its transitions", async () => {
  const sinks = [new Sink(), new Sink()];
  const workers = sinks.map((sink, i) => events(sink, ownedRooms(i, 2)));
  const rooms = Array.from({ length: 40 }, (_, i) => `/room-${i}`);
  const owners = rooms.map((r) => roomOwner(r, 2));
  assert.ok(owners.includes(0) && owners.includes(1), "rooms spread over both workers");
  // Every worker sees every room come and go (presence is shared); members are on worker 0.
  for (const r of rooms) {
    workers[0]!.joined(member("m", r));
    workers[1]!.presence(r, true);
    workers[0]!.left(member("m", r), "client", false);
    workers[1]!.presence(r, false);
  }
  const got: string[][] = [[], []];
  for (const [i, sink] of sinks.entries()) {
    while (sink.arrived.size > 0) got[i]!.push(await sink.next());
  }
  for (const [i, r] of rooms.entries()) {
    const owner = owners[i]!;
    assert.deepEqual(got[owner]!.filter((e) => e.startsWith("room.") && e.endsWith(` ${r}`)), [
      `room.occupied ${r}`,
      `room.vacated ${r}`,
    ]);
    assert.equal(
      got[1 - owner]!.filter((e) => e.startsWith("room.") && e.endsWith(` ${r}`)).length,
      0,
    );
  }
  assert.equal(got[1]!.filter((e) => e.startsWith("member.")).length, 0, "members' own worker");
  for (const w of workers) await w.close(Date.now());
});

/** An occupancy whose claims the test answers one by one. */
class Deferred implements Occupancy {
  readonly claims = new Inbox<
    { room: string; state: RoomState; answer: (won: boolean) => void; fail: () => void }
  >();
  claimRoom(room: string, state: RoomState): Promise<boolean> {
    return new Promise((resolve, reject) =>
      this.claims.push({
        room,
        state,
        answer: resolve,
        fail: () => reject(new Error("backplane down")),
      })
    );
  }
}

Deno.test("a claim that takes time keeps occupied ahead of the joined queued meanwhile", async () => {
  const sink = new Sink();
  const occupancy = new Deferred();
  const room = events(sink, occupancy);
  room.joined(member("a"));
  const claim = await occupancy.claims.next("the occupied claim");
  assert.equal(claim.state, "occupied");
  assert.equal(sink.arrived.size, 0, "the joined waits behind the claim's place");
  claim.answer(true);
  assert.equal(await sink.next(), "room.occupied /r");
  assert.equal(await sink.next(), "member.joined /r a");
  room.left(member("a"), "client", false);
  assert.equal(await sink.next(), "member.left /r a");
  (await occupancy.claims.next("the vacant claim")).answer(false); // another hub sent it
  room.joined(member("b"));
  const again = await occupancy.claims.next("the next occupied claim");
  assert.equal(again.state, "occupied", "the room was vacated by another hub: claim it again");
  again.answer(true);
  assert.equal(await sink.next(), "room.occupied /r");
  assert.equal(await sink.next(), "member.joined /r b");
  await room.close(Date.now());
});

Deno.test("a claim that fails is retried, from the view of then, and warned", async () => {
  const sink = new Sink(["room.occupied", "room.vacated"]);
  const occupancy = new Deferred();
  const logs: string[] = [];
  const room = events(sink, occupancy, 0, logs);
  room.joined(member("a"));
  (await occupancy.claims.next("the first claim")).fail();
  const retry = await occupancy.claims.next("the retried claim");
  assert.equal(retry.state, "occupied");
  retry.answer(true);
  assert.equal(await sink.next(), "room.occupied /r");
  assert.ok(logs.some((l) => l.includes("room claim failed, retrying")));
  // A change undone while the claim was failing needs no claim at all.
  room.left(member("a"), "client", false);
  (await occupancy.claims.next("the vacant claim")).fail();
  room.joined(member("a"));
  // close() claims at once whatever is still to be claimed: here nothing, occupied was told.
  await room.close(Date.now() + 1000);
  assert.equal(occupancy.claims.size, 0);
  assert.equal(sink.arrived.size, 0);
});

Deno.test("close claims a vacancy still counting down its delay at once", async () => {
  const sink = new Sink(["room.vacated"]);
  const room = events(sink, EVERY_ROOM, 3_600_000);
  room.joined(member("a"));
  room.left(member("a"), "shutdown", false);
  assert.equal(sink.arrived.size, 0);
  await room.close(Date.now() + 1000);
  assert.equal(await sink.next(), "room.vacated /r");
  room.joined(member("b"));
  assert.equal(sink.arrived.size, 0, "nothing after close");
});

Deno.test("once a shutdown hurries, vacancies are claimed at once, the waiting ones too", async () => {
  const sink = new Sink(["room.vacated"]);
  const room = events(sink, EVERY_ROOM, 3_600_000);
  room.joined(member("a", "/waiting"));
  room.left(member("a", "/waiting"), "client", false);
  room.joined(member("b", "/busy"));
  assert.equal(sink.arrived.size, 0);
  room.hurry();
  assert.equal(await sink.next(), "room.vacated /waiting");
  room.left(member("b", "/busy"), "shutdown", false);
  assert.equal(await sink.next(), "room.vacated /busy");
  await room.close(Date.now());
});

Deno.test("member events carry transport, mode, name and sub; messages their offset", async () => {
  const sink = new Sink(["member.joined", "message"]);
  const room = events(sink);
  room.joined(member("u1", "/r", { transport: "sse", sub: "u1" }));
  room.joined(member("g", "/r", { mode: "raw" }));
  const [sse, raw] = [await sink.arrived.next(), await sink.arrived.next()];
  assert.deepEqual(
    { ...sse, ts: 0 },
    {
      type: "member.joined",
      room: "/r",
      ts: 0,
      id: "u1",
      name: "name-u1",
      transport: "sse",
      mode: "chat",
      sub: "u1",
    },
  );
  assert.equal(raw.transport, "websocket");
  assert.equal(raw.mode, "raw");
  assert.equal("sub" in raw, false, "no sub without a token");
  const message = { type: "message", id: "n-1", from: { id: "a", name: "A" }, text: "hi", ts: 7 };
  room.stored!("/r", message as never, { epoch: "e", offset: 12 });
  room.stored!("/r", { ...message, id: "n-2" } as never, null);
  assert.deepEqual(await sink.arrived.next(), {
    type: "message",
    room: "/r",
    ts: 7,
    id: "n-1",
    offset: 12,
    from: { id: "a", name: "A" },
    text: "hi",
  });
  assert.equal((await sink.arrived.next()).offset, null, "an unstored message has no offset");
  assert.equal(events(new Sink()).stored, undefined, "no message events unless asked for");
  await room.close(Date.now());
});

const missing = await redisMissing();

Deno.test({
  name: missing
    ? `Redis: each transition is claimed by exactly one instance (ignored: ${missing})`
    : "Redis: each transition is claimed by exactly one instance",
  ignore: missing !== undefined,
  async fn() {
    const redis = await startRedis();
    const buses = ["n1", "n2", "n3"].map((node) =>
      new RedisBus({
        url: redis.url,
        node,
        retainMessages: 0,
        retainMs: 0,
        log: quiet,
        metrics: new Metrics(),
      })
    );
    try {
      const up = (b: RedisBus) => b.claimRoom("/probe", "vacant").then(() => true, () => false);
      await waitFor(async () => (await Promise.all(buses.map(up))).every(Boolean), "connected");
      const claim = async (state: RoomState) =>
        (await Promise.all(buses.map((b) => b.claimRoom("/r", state)))).filter(Boolean).length;
      assert.equal(await claim("occupied"), 1);
      assert.equal(await claim("occupied"), 0, "already occupied");
      assert.equal(await claim("vacant"), 1);
      assert.equal(await claim("vacant"), 0, "already vacant");
      assert.equal(await claim("occupied"), 1, "occupied again");
    } finally {
      await Promise.all(buses.map((b) => b.close()));
      await redis.kill();
    }
  },
});
