/**
 * Scale-out over Redis (`--redis-url`): several `main.ts` processes on one `redis-server` act
 * as one hub. Each test starts its own Redis on a free port (no persistence) and two or three
 * instances exactly as `deno task start` runs them. Without `redis-server` these tests are
 * registered as ignored with the reason in their name.
 */
import assert from "node:assert/strict";
import { HEARTBEAT_MS, LEAVE_BOUND_MS, PEER_EXPIRY_MS } from "../src/redis_bus.ts";
import {
  type ChatClient,
  chatClient,
  type Client,
  type Event,
  freePort,
  type MainProcess,
  rawClient,
  redisMissing,
  type RedisServer,
  runMain,
  startMain,
  startRedis,
  waitFor,
} from "./helpers.ts";

const missing = await redisMissing();

const KEY = "scaleout-api-key-0123456789";

/** Register a test that needs `redis-server`, ignored with the reason when it is missing. */
function redisTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: missing ? `${name} (ignored: ${missing})` : name,
    ignore: missing !== undefined,
    fn,
  });
}

/** Instances of one test, stopped (and checked to exit cleanly) however the test ends. */
class Fleet {
  readonly #running = new Set<MainProcess>();
  readonly redis: RedisServer;

  constructor(redis: RedisServer) {
    this.redis = redis;
  }

  /** Start one instance on the backplane and wait until it has connected to Redis. */
  async start(args: string[] = []): Promise<MainProcess> {
    const main = await startMain(["--redis-url", this.redis.url, "--api-key", KEY, ...args]);
    this.#running.add(main);
    await waitFor(async () => (await health(main)).status === "ok", "the backplane is up");
    return main;
  }

  /** Kill an instance without letting it say goodbye, as a crash would. */
  async crash(main: MainProcess): Promise<void> {
    this.#running.delete(main);
    main.child.kill("SIGKILL");
    await main.output();
  }

  /** SIGTERM every instance still running and expect exit status 0; stop Redis. */
  async stop(): Promise<string[]> {
    const running = [...this.#running];
    this.#running.clear();
    try {
      const outputs = await Promise.all(running.map(async (main) => {
        main.child.kill("SIGTERM");
        const out = await main.output();
        assert.equal(out.code, 0, out.stderr);
        return out.stderr;
      }));
      return outputs;
    } finally {
      // A failed exit above must not leave an instance or Redis running.
      await Promise.all(running.map((main) => main.stop()));
      await this.redis.kill();
    }
  }
}

/** Run `fn` with a fresh Redis and a fleet on it; everything is stopped afterwards. */
async function withFleet(fn: (fleet: Fleet) => Promise<void>): Promise<string[]> {
  const fleet = new Fleet(await startRedis());
  let logs: string[];
  try {
    await fn(fleet);
  } finally {
    logs = await fleet.stop();
  }
  return logs;
}

function ws(main: MainProcess, path: string): string {
  return `ws://127.0.0.1:${main.port}${path}`;
}

// deno-lint-ignore no-explicit-any
async function health(main: MainProcess): Promise<Record<string, any>> {
  return await (await fetch(`${main.url}healthz`)).json();
}

async function metric(main: MainProcess, name: string): Promise<number> {
  const text = await (await fetch(`${main.url}metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(" ")[1]);
}

/** Wait until every instance counts `n` connections in total (presence has crossed Redis). */
async function allSee(mains: MainProcess[], n: number): Promise<void> {
  for (const main of mains) {
    await waitFor(async () => (await health(main)).connections === n, `${main.port} sees ${n}`);
  }
}

function api(main: MainProcess, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${main.url}${path.slice(1)}`, {
    ...init,
    headers: { authorization: `Bearer ${KEY}`, ...init.headers },
  });
}

async function nextBinary(c: Client): Promise<Uint8Array> {
  const f = await c.frames.next("a binary frame");
  if (typeof f === "string") throw new Error(`expected a binary frame, got ${JSON.stringify(f)}`);
  return new Uint8Array(f);
}

/** Next `message` event's text, skipping presence events. */
async function nextText(c: ChatClient): Promise<Event> {
  return await c.until("message");
}

redisTest("raw and chat clients on two instances hear each other in both directions", async () => {
  await withFleet(async (fleet) => {
    const a = await fleet.start();
    const b = await fleet.start();
    const alice = await chatClient(ws(a, "/both?name=alice"));
    await allSee([a, b], 1);
    const bob = await chatClient(ws(b, "/both?name=bob"));
    assert.deepEqual(bob.welcome.members.map((m: Event) => m.name).sort(), ["alice", "bob"]);
    assert.equal((await alice.client.next("join")).name, "bob");
    const rawA = await rawClient(ws(a, "/both"));
    const rawB = await rawClient(ws(b, "/both"));
    await allSee([a, b], 4);
    const joins = async (c: ChatClient) =>
      [(await c.next("join")).id, (await c.next("join")).id].sort();
    assert.deepEqual(await joins(alice.client), await joins(bob.client));

    rawA.send("text from raw A");
    assert.equal(await rawB.text(), "text from raw A");
    assert.equal(await rawA.text(), "text from raw A", "the sender hears itself once");
    assert.equal((await bob.client.next("message")).text, "text from raw A");
    assert.equal((await alice.client.next("message")).text, "text from raw A");

    rawB.send(new Uint8Array([0, 1, 2, 254, 255]));
    assert.deepEqual(await nextBinary(rawA), new Uint8Array([0, 1, 2, 254, 255]));
    assert.deepEqual(await nextBinary(rawB), new Uint8Array([0, 1, 2, 254, 255]));

    bob.client.say("from bob on B");
    assert.equal(await rawA.text(), "from bob on B");
    assert.equal(await rawB.text(), "from bob on B");
    const heard = await alice.client.next("message"); // binary frames never reach chat clients
    assert.equal(heard.text, "from bob on B");
    assert.equal(heard.from.name, "bob");
    assert.equal((await bob.client.next("message")).id, heard.id);

    alice.client.sendEvent({ type: "rename", name: "alice2" });
    const rename = { type: "rename", id: alice.welcome.id, name: "alice2", oldName: "alice" };
    assert.deepEqual(await alice.client.next("rename"), rename);
    assert.deepEqual(await bob.client.next("rename"), rename);
    await bob.client.close();
    assert.deepEqual(await alice.client.next("leave"), {
      type: "leave",
      id: bob.welcome.id,
      name: "bob",
    });
    // Nothing delivered twice: a duplicate crossing Redis would come before a marker that
    // crosses it after, so each raw client's next frame is the other instance's marker.
    rawA.send("end A");
    assert.equal(await rawA.text(), "end A", "nothing delivered twice on A");
    assert.equal(await rawB.text(), "end A", "nothing delivered twice on B");
    rawB.send("end B");
    assert.equal(await rawB.text(), "end B");
    assert.equal(await rawA.text(), "end B", "nothing delivered twice on A");
    await Promise.all([alice.client.close(), rawA.close(), rawB.close()]);
  });
});

redisTest(
  "two senders on two instances: every instance hears one interleaving, each sender in order, once",
  async () => {
    await withFleet(async (fleet) => {
      const mains = [
        await fleet.start(["--rate-limit", "0"]),
        await fleet.start(["--rate-limit", "0"]),
        await fleet.start(["--rate-limit", "0"]),
      ];
      const clients = await Promise.all(mains.map((m) => rawClient(ws(m, "/order"))));
      await allSee(mains, 3);
      const n = 1000;
      const senders = [clients[0]!, clients[2]!];
      senders.forEach((c, s) => {
        for (let i = 0; i < n; i++) c.send(`${s}:${i}`);
      });
      const logs = await Promise.all(clients.map(async (c) => {
        const next = [0, 0];
        const log: string[] = [];
        for (let k = 0; k < 2 * n; k++) {
          const text = await c.text();
          log.push(text);
          const [s = -1, i] = text.split(":").map(Number);
          assert.equal(i, next[s], `sender ${s} in order`);
          next[s]!++;
        }
        assert.deepEqual(next, [n, n]);
        return log;
      }));
      // One order per room: the same interleaving of the two senders on every instance.
      assert.deepEqual(logs[1], logs[0]);
      assert.deepEqual(logs[2], logs[0]);
      clients[1]!.send("end");
      for (const c of clients) assert.equal(await c.text(), "end", "no duplicate before the end");
      await Promise.all(clients.map((c) => c.close()));
    });
  },
);

redisTest(
  "history lives in Redis: an instance started after the messages sends them on join",
  async () => {
    await withFleet(async (fleet) => {
      const a = await fleet.start(["--history", "3"]);
      const alice = await chatClient(ws(a, "/hist?name=alice"));
      const raw = await rawClient(ws(a, "/hist"));
      const ids: string[] = [];
      for (const text of ["one", "two", "three"]) {
        alice.client.say(text);
        ids.push((await nextText(alice.client)).id);
      }
      raw.send("four, from a raw client");
      ids.push((await nextText(alice.client)).id);

      const b = await fleet.start(["--history", "3"]);
      const late = await chatClient(ws(b, "/hist?name=late"));
      assert.deepEqual(
        late.welcome.history.map((m: Event) => m.text),
        ["two", "three", "four, from a raw client"],
        "the last --history messages, oldest first",
      );
      assert.deepEqual(late.welcome.history.map((m: Event) => m.id), ids.slice(1));
      const resumed = await chatClient(ws(b, `/hist?name=back&since=${ids[2]}`));
      assert.equal(resumed.welcome.recovered, true);
      assert.deepEqual(resumed.welcome.history.map((m: Event) => m.id), [ids[3]]);
      await Promise.all([alice.client.close(), raw.close(), late.client.close()]);
      await resumed.client.close();
    });
  },
);

redisTest(
  "presence spans instances; a killed instance's members leave everywhere within the bound",
  async () => {
    await withFleet(async (fleet) => {
      const [a, b, c] = [await fleet.start(), await fleet.start(), await fleet.start()];
      const alice = await chatClient(ws(a, "/team?name=alice"));
      await allSee([a, b, c], 1);
      const bob = await chatClient(ws(b, "/team?name=bob"));
      await allSee([a, b, c], 2);
      const carol = await chatClient(ws(c, "/team?name=carol"));
      const rawC = await rawClient(ws(c, "/other"));
      assert.deepEqual(
        carol.welcome.members.map((m: Event) => m.name).sort(),
        ["alice", "bob", "carol"],
        "welcome.members lists members of every instance",
      );
      await allSee([a, b, c], 4);
      const rooms = await (await api(a, "/api/rooms")).json();
      assert.deepEqual(rooms, {
        rooms: [{ room: "/other", members: 1 }, { room: "/team", members: 3 }],
      });
      const members = await (await api(b, "/api/rooms/members?room=/team")).json();
      assert.deepEqual(members.members.map((m: Event) => m.name).sort(), ["alice", "bob", "carol"]);
      assert.equal((await alice.client.next("join")).name, "bob");
      assert.equal((await alice.client.next("join")).name, "carol");

      await fleet.crash(c);
      const crashedAt = Date.now();
      const bound = LEAVE_BOUND_MS + 500; // plus delivery, on a busy test machine
      const leave = await alice.client.events.next("carol's leave", bound + 2000);
      assert.deepEqual(leave, { type: "leave", id: carol.welcome.id, name: "carol" });
      assert.deepEqual(await bob.client.until("leave"), leave);
      const elapsed = Date.now() - crashedAt;
      assert.ok(elapsed <= bound, `left after ${elapsed} ms, bound ${bound} ms`);
      assert.ok(elapsed >= PEER_EXPIRY_MS - HEARTBEAT_MS, `not before the expiry: ${elapsed} ms`);
      assert.deepEqual(await (await api(a, "/api/rooms")).json(), {
        rooms: [{ room: "/team", members: 2 }],
      });
      assert.equal((await health(b)).connections, 2);
      await Promise.all([alice.client.close(), bob.client.close(), carol.client.closed]);
      await rawC.closed;
    });
  },
);

redisTest(
  "the publish API on one instance reaches raw and chat clients on every instance",
  async () => {
    await withFleet(async (fleet) => {
      const a = await fleet.start();
      const b = await fleet.start();
      const raw = await rawClient(ws(b, "/stocks"));
      const chat = await chatClient(ws(b, "/stocks?name=watcher"));
      const local = await rawClient(ws(a, "/stocks"));
      await allSee([a, b], 3);
      const res = await api(a, "/api/publish?room=/stocks&name=prices", {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "ACME 120.31",
      });
      const answer = await res.json();
      assert.equal(answer.delivered, 1, "delivered counts this instance");
      assert.equal(answer.offset, 1, "the offset Redis gave it");
      assert.equal(await raw.text(), "ACME 120.31");
      assert.equal(await local.text(), "ACME 120.31");
      const message = await nextText(chat.client);
      assert.equal(message.text, "ACME 120.31");
      assert.deepEqual(message.from, { id: "server", name: "prices" });
      const bin = await api(a, "/api/publish?room=/stocks", {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: new Uint8Array([7, 8, 9]),
      });
      assert.equal(bin.status, 200);
      await bin.body?.cancel();
      assert.deepEqual(await nextBinary(raw), new Uint8Array([7, 8, 9]));
      await Promise.all([raw.close(), chat.client.close(), local.close()]);
    });
  },
);

redisTest(
  "Redis killed and restarted: local rooms keep working, /healthz degrades, delivery resumes",
  async () => {
    const logs = await withFleet(async (fleet) => {
      const a = await fleet.start();
      const b = await fleet.start();
      const rawA = await rawClient(ws(a, "/r"));
      const nearA = await rawClient(ws(a, "/r"));
      const rawB = await rawClient(ws(b, "/r"));
      const chatB = await chatClient(ws(b, "/r?name=bea"));
      await allSee([a, b], 4);
      const ann = await chatClient(ws(a, "/r?name=ann"));
      await allSee([a, b], 5);
      rawA.send("before");
      for (const c of [rawA, nearA, rawB]) assert.equal(await c.text(), "before");
      assert.equal((await nextText(chatB.client)).text, "before");

      await fleet.redis.kill();
      for (const m of [a, b]) {
        await waitFor(async () => (await health(m)).status === "degraded", "degraded");
      }
      const down = await health(a);
      assert.equal(down.backplane, "down");
      assert.equal(await metric(a, "chorus_backplane_up"), 0);
      rawA.send("during the outage");
      assert.equal(await nearA.text(), "during the outage", "local delivery goes on");
      assert.equal(await rawA.text(), "during the outage");
      assert.ok(await metric(a, "chorus_backplane_dropped_total") >= 1);
      const newbie = await chatClient(ws(b, "/r?name=newbie")); // A cannot hear this join now

      await fleet.redis.restart();
      for (const m of [a, b]) await waitFor(async () => (await health(m)).status === "ok", "ok");
      rawA.send("after");
      assert.equal(await rawB.text(), "after", "the outage's message is lost, the next arrives");
      assert.equal((await nextText(chatB.client)).text, "after");
      rawB.send("and back");
      assert.equal(await nearA.text(), "after");
      assert.equal(await nearA.text(), "and back");
      assert.ok(await metric(a, "chorus_backplane_reconnects_total") >= 1);
      assert.equal(await metric(b, "chorus_backplane_up"), 1);
      // B resent its members after the restart: A's members hear of the join they missed.
      for (;;) {
        const join = await ann.client.until("join");
        if (join.name === "newbie") break;
      }
      const late = await chatClient(ws(a, "/r?name=late"));
      assert.deepEqual(
        late.welcome.members.map((m: Event) => m.name).sort(),
        ["ann", "bea", "guest-0001", "guest-0001", "guest-0002", "late", "newbie"],
      );
      await Promise.all([rawA.close(), nearA.close(), rawB.close(), chatB.client.close()]);
      await Promise.all([ann.client.close(), newbie.client.close(), late.client.close()]);
    });
    for (const stderr of logs) {
      assert.match(stderr, /WARN {2}backplane lost url=redis:\/\/127\.0\.0\.1:\d+/);
      assert.match(stderr, /INFO {2}backplane recovered/);
    }
  },
);

redisTest(
  "an instance started while Redis is down serves local rooms and joins when it comes up",
  async () => {
    const port = freePort();
    const main = await startMain(["--redis-url", `redis://127.0.0.1:${port}`]);
    let redis: RedisServer | undefined;
    try {
      assert.deepEqual(
        { ...(await health(main)), uptime: 0 },
        { status: "degraded", backplane: "down", connections: 0, rooms: 0, uptime: 0 },
      );
      const a = await rawClient(ws(main, "/solo"));
      const b = await rawClient(ws(main, "/solo"));
      a.send("works without Redis");
      assert.equal(await b.text(), "works without Redis");
      redis = await startRedis(port);
      await waitFor(async () => (await health(main)).status === "ok", "ok once Redis is up");
      await Promise.all([a.close(), b.close()]);
    } finally {
      try {
        main.child.kill("SIGTERM");
        assert.equal((await main.output()).code, 0);
      } finally {
        await redis?.kill();
      }
    }
  },
);

redisTest(
  "a stalled Redis delays a room's first join, not the upgrade; early frames follow in order",
  async () => {
    await withFleet(async (fleet) => {
      const a = await fleet.start();
      Deno.kill(fleet.redis.pid()!, "SIGSTOP"); // connections stay open, nothing is answered
      try {
        const started = Date.now();
        const raw = await rawClient(ws(a, "/stalled"));
        assert.ok(Date.now() - started < 1000, "the upgrade is answered at once");
        for (const text of ["one", "two", "three"]) raw.send(text);
        for (const text of ["one", "two", "three"]) assert.equal(await raw.text(), text);
        assert.ok(Date.now() - started >= 1500, "relayed once the join gave up waiting (2 s)");
        await raw.close();
      } finally {
        Deno.kill(fleet.redis.pid()!, "SIGCONT");
      }
    });
  },
);

redisTest(
  "with --workers 2, each worker is an instance on Redis and nothing arrives twice",
  async () => {
    await withFleet(async (fleet) => {
      const w = await fleet.start(["--workers", "2"]);
      const b = await fleet.start();
      const spread = await Promise.all(Array.from({ length: 10 }, () => rawClient(ws(w, "/wk"))));
      const other = await rawClient(ws(b, "/wk"));
      await allSee([w, b], 11);
      other.send("from B");
      for (const c of [...spread, other]) assert.equal(await c.text(), "from B");
      spread[3]!.send("from a worker");
      for (const c of [...spread, other]) assert.equal(await c.text(), "from a worker");
      other.send("end");
      for (const c of [...spread, other]) assert.equal(await c.text(), "end", "nothing twice");
      await Promise.all([...spread, other].map((c) => c.close()));
    });
  },
);

redisTest(
  "a wrong Redis password: degraded, one warn line naming the cause, never the password",
  async () => {
    const redis = await startRedis(undefined, ["--requirepass", "right-password"]);
    const main = await startMain([
      "--redis-url",
      `redis://:wrong-password@127.0.0.1:${redis.port}`,
    ]);
    try {
      await waitFor(
        async () => (await metric(main, "chorus_backplane_errors_total")) >= 2,
        "retries",
      );
      assert.equal((await health(main)).status, "degraded");
    } finally {
      main.child.kill("SIGTERM");
      const out = await main.output().finally(() => redis.kill());
      assert.equal(out.code, 0);
      const warns = out.stderr.split("\n").filter((l) => l.includes("WARN"));
      assert.equal(warns.length, 1, out.stderr);
      assert.match(
        warns[0]!,
        /backplane unreachable url=redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ .*WRONGPASS/,
      );
      assert.doesNotMatch(out.stderr, /wrong-password/);
    }
  },
);

Deno.test("without --redis-url no backplane runs: /healthz and /metrics say nothing of Redis", async () => {
  const main = await startMain([], { CHORUS_REDIS_URL: "" });
  try {
    const body = await health(main);
    assert.equal(body.status, "ok");
    assert.equal("backplane" in body, false);
    const metrics = await (await fetch(`${main.url}metrics`)).text();
    assert.doesNotMatch(metrics, /backplane/);
    const a = await rawClient(ws(main, "/"));
    const b = await rawClient(ws(main, "/"));
    a.send("no Redis needed");
    assert.equal(await b.text(), "no Redis needed");
    await Promise.all([a.close(), b.close()]);
  } finally {
    main.child.kill("SIGTERM");
    const out = await main.output();
    assert.equal(out.code, 0);
    assert.doesNotMatch(out.stderr, /backplane|redis/i);
  }
});

Deno.test("an invalid --redis-url or CHORUS_REDIS_URL exits 2 with a one-line error", async () => {
  for (
    const [args, env, first] of [
      [
        ["--redis-url", "http://cache:6379"],
        {},
        "chorus: --redis-url: expected redis://HOST:PORT[/DB], got the scheme http:",
      ],
      [
        [],
        { CHORUS_REDIS_URL: "redis://:hunter2@cache:6379/db" },
        "chorus: CHORUS_REDIS_URL: expected redis://HOST:PORT[/DB], got a path that is not a DB number",
      ],
    ] as [string[], Record<string, string>, string][]
  ) {
    const out = await runMain(args, env);
    assert.equal(out.code, 2);
    assert.equal(out.stderr.split("\n")[0], first);
    assert.doesNotMatch(out.stderr, /hunter2/, "the password is never echoed");
  }
});

Deno.test("--redis-url without the Redis client's permissions exits 2 naming them", async () => {
  const out = await runMain(["--redis-url", "redis://127.0.0.1:6390"]); // --allow-env=PORT,CHORUS_*
  assert.equal(out.code, 2);
  assert.equal(
    out.stderr,
    "chorus: --redis-url: the Redis client needs more permissions (grant " +
      "--allow-env=REDIS_DEBUG_MAINTENANCE,REDIS_EMIT_DIAGNOSTICS)\n",
  );
});

redisTest(
  "frames sent while the room is not ready are bounded by --max-buffered-bytes, with no rate limit",
  async () => {
    await withFleet(async (fleet) => {
      const a = await fleet.start(["--rate-limit", "0", "--max-buffered-bytes", "4096"]);
      Deno.kill(fleet.redis.pid()!, "SIGSTOP"); // the room's first join now waits for Redis
      try {
        const flood = await rawClient(ws(a, "/held"));
        const chunk = "x".repeat(1024);
        for (let i = 0; i < 8; i++) flood.send(chunk); // 8 KiB held before the join
        const closed = await flood.closed;
        // Deno skips the close frame while client frames are still unread (docs/protocol.md):
        // the client sees the connection end, the server counts why.
        assert.notEqual(closed.code, 1000, `closed with ${JSON.stringify(closed)}`);
        assert.equal(await metric(a, 'chorus_disconnects_total{reason="rate_limited"}'), 1);
      } finally {
        Deno.kill(fleet.redis.pid()!, "SIGCONT");
      }
    });
  },
);
