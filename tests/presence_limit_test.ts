/**
 * `--presence-limit`: a room crosses the limit up and down with chat and raw members, and its
 * members get per-member events below it and counts above it, the same on one process, with
 * `--workers 2` and on two instances over a real redis-server. Member paging through the API
 * sees every member once wherever it runs.
 */
import assert from "node:assert/strict";
import {
  type ChatClient,
  chatClient,
  type Client,
  type Event,
  type MainProcess,
  rawClient,
  redisMissing,
  startMain,
  startRedis,
  startServer,
  waitFor,
} from "./helpers.ts";

const KEY = "presence-limit-api-key-0123";
const LIMIT = ["--presence-limit", "3", "--presence-interval", "0.1"];
const ROOM = "/crowd";

/** Where the scenario runs: two hubs (the same one twice on one process). */
interface Setup {
  /** A WebSocket URL on hub `hub` (0 or 1) for `path`. */
  ws(hub: 0 | 1, path: string): string;
  /** The HTTP origins to ask the API, one per hub that answers separately. */
  origins: string[];
  /** Fresh connections per request, so that each worker of `--workers` gets asked. */
  fetch(url: string): Promise<Response>;
}

/** One API page of the room's members from `origin`. */
async function page(setup: Setup, origin: string, after: string | null, limit: number) {
  const query = `room=${ROOM}&limit=${limit}${after === null ? "" : `&after=${after}`}`;
  const res = await setup.fetch(`${origin}/api/rooms/members?${query}`);
  assert.equal(res.status, 200);
  return await res.json();
}

/**
 * Wait until every hub counts `n` members in the room (asked 12 times in a row on fresh
 * connections, so that with `--workers 2` both workers have surely answered).
 */
async function converge(setup: Setup, n: number): Promise<void> {
  for (const origin of setup.origins) {
    let agreed = 0;
    await waitFor(async () => {
      agreed = (await page(setup, origin, null, 1)).count === n ? agreed + 1 : 0;
      return agreed >= 12;
    }, `every hub counts ${n} in ${ROOM}`);
  }
}

/** Read events until one of `type`; every event before it must be a `presence` count. */
async function quietlyUntil(client: ChatClient, type: string): Promise<Event> {
  for (;;) {
    const e = await client.next();
    if (e.type === type) return e;
    assert.equal(e.type, "presence", `only counts above the limit, got ${JSON.stringify(e)}`);
  }
}

/** Read counts until the count is `n`. */
async function countReaches(client: ChatClient, n: number): Promise<void> {
  for (;;) {
    const e = await quietlyUntil(client, "presence");
    if (e.count === n) return;
  }
}

/** Page through every member of the room at `limit` per page, on every hub. */
async function allPages(setup: Setup, limit: number): Promise<string[][]> {
  const out: string[][] = [];
  for (const origin of setup.origins) {
    const ids: string[] = [];
    let after: string | null = null;
    do {
      const p: { members: { id: string }[]; next: string | null } = await page(
        setup,
        origin,
        after,
        limit,
      );
      assert.ok(p.members.length <= limit, "a page holds at most limit members (ids unique)");
      ids.push(...p.members.map((m) => m.id));
      after = p.next;
    } while (after !== null);
    out.push(ids);
  }
  return out;
}

/** The crossing scenario, with a limit of 3 and counts every 0.1 s. */
async function crossTheLimit(setup: Setup): Promise<void> {
  const clients: Client[] = [];
  const chat = async (hub: 0 | 1, name: string) => {
    const c = await chatClient(setup.ws(hub, `${ROOM}?name=${name}`));
    clients.push(c.client);
    return c;
  };
  const raw = async (hub: 0 | 1, name: string) => {
    const c = await rawClient(setup.ws(hub, `${ROOM}?name=${name}`));
    clients.push(c);
    return c;
  };
  try {
    // Within the limit: full presence, and welcome always carries count.
    const o = await chat(0, "Obs");
    assert.equal(o.welcome.count, 1);
    assert.deepEqual(o.welcome.members, [{ id: o.welcome.id, name: "Obs" }]);
    assert.equal(o.welcome.partial, undefined);
    await converge(setup, 1);
    const c1 = await chat(1, "Cy");
    assert.equal(c1.welcome.count, 2);
    assert.equal(c1.welcome.members.length, 2);
    await converge(setup, 2);
    const r1 = await raw(1, "Rawley");
    await converge(setup, 3);
    assert.deepEqual(
      [await o.client.next("join"), await o.client.next("join")].map((e) => e.name),
      [
        "Cy",
        "Rawley",
      ],
    );
    assert.equal((await c1.client.next("join")).name, "Rawley");

    // Over the limit: the newcomer gets a partial list, the others a count and no join.
    const c2 = await chat(0, "Dee");
    await converge(setup, 4);
    assert.equal(c2.welcome.count, 4);
    assert.equal(c2.welcome.partial, true);
    assert.ok(c2.welcome.members.length <= 20, "a bounded sample");
    assert.deepEqual(await o.client.next("presence"), { type: "presence", count: 4 });
    assert.deepEqual(await c1.client.next("presence"), { type: "presence", count: 4 });
    const r2 = await raw(1, "Rex");
    const c3 = await chat(0, "Eve");
    await converge(setup, 6);
    for (const c of [o, c1, c2]) await countReaches(c.client, 6);

    // Every member exactly once through the API, on every hub, whatever the room's size.
    for (const ids of await allPages(setup, 2)) {
      assert.equal(ids.length, 6);
      assert.equal(new Set(ids).size, 6, "no member twice");
      for (const c of [o, c1, c2, c3]) assert.ok(ids.includes(c.welcome.id));
    }

    // A rename reaches the renamer alone; messages still carry the name.
    c3.client.sendEvent({ type: "rename", name: "Neo" });
    assert.deepEqual(await quietlyUntil(c3.client, "rename"), {
      type: "rename",
      id: c3.welcome.id,
      name: "Neo",
      oldName: "Eve",
    });
    c3.client.say("hi from Neo");
    for (const c of [o, c1]) {
      const m = await quietlyUntil(c.client, "message");
      assert.deepEqual(m.from, { id: c3.welcome.id, name: "Neo" });
    }

    // Back within the limit: one full list, then per-member events again.
    await Promise.all([c3.client.close(), c2.client.close(), r2.close()]);
    await converge(setup, 3);
    let rawleyId = "";
    for (const c of [o, c1]) {
      const list = await quietlyUntil(c.client, "members");
      assert.equal(list.count, 3);
      assert.deepEqual(list.members.map((m: Event) => m.name).sort(), ["Cy", "Obs", "Rawley"]);
      rawleyId = list.members.find((m: Event) => m.name === "Rawley").id;
    }
    await r1.close();
    for (const c of [o, c1]) {
      assert.deepEqual(await c.client.next("leave"), {
        type: "leave",
        id: rawleyId,
        name: "Rawley",
      });
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

Deno.test("one process: a room crosses --presence-limit up and down", async () => {
  const server = startServer({ presenceLimit: 3, presenceInterval: 0.1, apiKey: KEY });
  const http = Deno.createHttpClient({});
  try {
    await crossTheLimit({
      ws: (_hub, path) => server.ws(path),
      origins: [server.origin],
      fetch: (url) => fetch(url, { client: http, headers: { authorization: `Bearer ${KEY}` } }),
    });
  } finally {
    http.close();
    await server.close();
  }
});

/** Stop a process started by a test with SIGTERM and expect a clean exit. */
async function stopCleanly(main: MainProcess): Promise<void> {
  main.child.kill("SIGTERM");
  const out = await main.output();
  assert.equal(out.code, 0, out.stderr);
}

Deno.test("--workers 2: a room crosses --presence-limit up and down across workers", async () => {
  const main = await startMain(["--workers", "2", "--api-key", KEY, ...LIMIT]);
  // No pooled connections: each request may reach either worker, so both are asked.
  const http = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const origin = main.url.slice(0, -1);
    await crossTheLimit({
      ws: (_hub, path) => `ws://127.0.0.1:${main.port}${path}`,
      origins: [origin],
      fetch: (url) => fetch(url, { client: http, headers: { authorization: `Bearer ${KEY}` } }),
    });
  } finally {
    http.close();
    await stopCleanly(main);
  }
});

const missing = await redisMissing();

Deno.test({
  name: `two instances over Redis: a room crosses --presence-limit up and down${
    missing ? ` (ignored: ${missing})` : ""
  }`,
  ignore: missing !== undefined,
  async fn() {
    const redis = await startRedis();
    const mains: MainProcess[] = [];
    const http = Deno.createHttpClient({});
    try {
      for (let i = 0; i < 2; i++) {
        mains.push(await startMain(["--redis-url", redis.url, "--api-key", KEY, ...LIMIT]));
      }
      await crossTheLimit({
        ws: (hub, path) => `ws://127.0.0.1:${mains[hub]!.port}${path}`,
        origins: mains.map((m) => m.url.slice(0, -1)),
        fetch: (url) => fetch(url, { client: http, headers: { authorization: `Bearer ${KEY}` } }),
      });
    } finally {
      http.close();
      await Promise.all(mains.map(stopCleanly));
      await redis.kill();
    }
  },
});
