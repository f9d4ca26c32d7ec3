/** `--workers`: several threads on one port acting as one hub, exercised through `main.ts`. */
import assert from "node:assert/strict";
import {
  type ChatClient,
  chatClient,
  type Client,
  type Closed,
  DENO,
  type Event,
  exchangeInOrder,
  type MainProcess,
  rawClient,
  ROOT,
  startMain,
  UPGRADE_HEADERS,
  waitFor,
} from "./helpers.ts";

async function withWorkers(
  args: string[],
  fn: (main: MainProcess, ws: (path: string) => string) => Promise<void>,
): Promise<void> {
  const main = await startMain(["--workers", "2", ...args]);
  try {
    await fn(main, (path) => `ws://127.0.0.1:${main.port}${path}`);
  } finally {
    main.child.kill("SIGTERM");
    assert.equal((await main.output()).code, 0);
  }
}

async function health(main: MainProcess) {
  return await (await fetch(`${main.url}healthz`)).json();
}

Deno.test("with --workers 2, 40 raw clients spread over both workers hear every message in order", async () => {
  await withWorkers([], async (main, ws) => {
    const n = 40;
    const perSender = 3;
    const clients = await Promise.all(Array.from({ length: n }, () => rawClient(ws("/spread"))));
    // Presence crosses workers on the bus; wait until every worker counts everyone.
    await waitFor(async () => (await health(main)).connections === n, "every worker sees 40");
    await exchangeInOrder(clients, perSender);
    const metrics = await (await fetch(`${main.url}metrics`)).text();
    assert.match(metrics, /^chorus_connections\{mode="raw",transport="websocket"\} 40$/m);
    assert.match(metrics, /^chorus_messages_received_total 120$/m);
    assert.match(
      metrics,
      new RegExp(`^chorus_messages_delivered_total ${n * n * perSender}$`, "m"),
    );
    await Promise.all(clients.map((c) => c.close()));
  });
});

Deno.test("with --workers 2, presence and history span workers", async () => {
  await withWorkers([], async (_main, ws) => {
    const first = await chatClient(ws("/team?name=first"));
    first.client.say("before the others came");
    await first.client.until("message");
    // Ten more members: both workers almost surely get some (the kernel hashes each connection).
    const others = [];
    for (let i = 0; i < 10; i++) {
      const c = await chatClient(ws(`/team?name=m${i}`));
      assert.deepEqual(c.welcome.history.map((m: { text: string }) => m.text), [
        "before the others came",
      ]);
      assert.equal(c.welcome.members.length, i + 2, "welcome lists members of every worker");
      others.push(c);
    }
    for (let i = 0; i < 10; i++) {
      const join = await first.client.until("join");
      assert.equal(join.name, `m${i}`);
    }
    await others[9]!.client.close();
    const leave = await first.client.until("leave");
    assert.equal(leave.name, "m9");
    await Promise.all([first, ...others.slice(0, 9)].map((c) => c.client.close()));
  });
});

Deno.test("with --workers 2, chat senders on both workers: every member hears one order, consecutive offsets, each sender's order kept", async () => {
  await withWorkers(["--store", "memory"], async (_main, ws) => {
    // The kernel picks each connection's worker: connect until both have members, and a few.
    const members: Member[] = [];
    while (members.length < 6 || new Set(members.map(nodeOf)).size < 2) {
      assert.ok(members.length < 40, "40 clients all landed on one worker");
      members.push(await chatClient(ws(`/order?name=s${members.length}`)));
    }
    const perSender = 40;
    const total = members.length * perSender;
    const logs = members.map(async ({ client }) => {
      const log: string[] = [];
      while (log.length < total) {
        const m = await client.until("message");
        log.push(`${m.offset}|${m.text}`);
      }
      return log;
    });
    members.forEach(({ client }, i) => {
      for (let k = 0; k < perSender; k++) client.say(`${i}:${k}`);
    });
    const [first, ...rest] = await Promise.all(logs);
    for (const log of rest) assert.deepEqual(log, first, "every member, on either worker, agrees");
    const offsets = first!.map((e) => Number(e.split("|")[0]));
    assert.deepEqual(offsets, offsets.map((_, j) => offsets[0]! + j), "consecutive offsets");
    const next = new Array(members.length).fill(0);
    for (const e of first!) {
      const [from, k] = e.split("|")[1]!.split(":").map(Number) as [number, number];
      assert.equal(k, next[from], `sender ${from}'s order`);
      next[from]++;
    }
    await Promise.all(members.map((m) => m.client.close()));
  });
});

Deno.test("with --workers 2, --max-connections holds for the whole process", async () => {
  await withWorkers(["--max-connections", "10"], async (main, ws) => {
    const clients: Client[] = [];
    for (let i = 0; i < 10; i++) clients.push(await rawClient(ws("/full")));
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${main.url}full`, {
        headers: UPGRADE_HEADERS,
      });
      assert.equal(res.status, 503);
      assert.equal((await res.json()).error.code, "too_many_connections");
    }
    await Promise.all(clients.map((c) => c.close()));
  });
});

Deno.test("with --workers 2, SIGTERM closes every client on every worker with 1001 and exits 0", async () => {
  await using main = await startMain(["--workers", "2"]);
  const clients = await Promise.all(
    Array.from({ length: 12 }, () => rawClient(`ws://127.0.0.1:${main.port}/bye`)),
  );
  main.child.kill("SIGTERM");
  for (const c of clients) {
    assert.deepEqual(await c.closed, { code: 1001, reason: "server shutting down" });
  }
  assert.equal((await main.output()).code, 0);
});

/**
 * `tests/fixtures/crash_cluster.ts` as a child process: `startCluster` with workers that crash
 * or hang on command. Every JSON line it prints is kept in `events`.
 */
class CrashHarness {
  readonly events: Event[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stdout: Promise<void>;
  readonly #stderr: Promise<string>;
  port = 0;

  constructor(args: string[]) {
    const child = new Deno.Command(DENO, {
      args: ["run", "--unstable-net", "--allow-all", "tests/fixtures/crash_cluster.ts", ...args],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.#stderr = new Response(child.stderr).text();
    this.#stdout = (async () => {
      let buffered = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffered += chunk;
        let end;
        while ((end = buffered.indexOf("\n")) !== -1) {
          this.events.push(JSON.parse(buffered.slice(0, end)));
          buffered = buffered.slice(end + 1);
        }
      }
    })();
  }

  /** The first event matching `predicate`, once it has been printed. */
  async expect(predicate: (e: Event) => boolean, label: string): Promise<Event> {
    await waitFor(() => this.events.some(predicate), label);
    return this.events.find(predicate)!;
  }

  /** Wait until the cluster listens and every worker reported its node; returns index by node. */
  async started(workers: number): Promise<Map<string, number>> {
    this.port = (await this.expect((e) => e.type === "listening" && "port" in e, "listening")).port;
    await waitFor(() => this.nodes().size === workers, `${workers} workers listening`);
    return this.nodes();
  }

  /** Node id to worker index, of every worker that reported it listens. */
  nodes(): Map<string, number> {
    return new Map(
      this.events.filter((e) => e.type === "listening" && "node" in e).map((e) => [
        e.node,
        e.index,
      ]),
    );
  }

  async send(command: Event): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
  }

  #exited: Promise<{ code: number; stderr: string }> | undefined;

  /** Wait for the process to exit; its status and stderr. */
  exited(): Promise<{ code: number; stderr: string }> {
    this.#exited ??= (async () => {
      try {
        await this.#stdin.close();
      } catch (err) {
        // A child that exited on its own closed the pipe first: nothing left to tell it.
        if (!(err instanceof Deno.errors.BrokenPipe)) throw err;
      }
      const [{ code }] = await Promise.all([this.#child.status, this.#stdout]);
      return { code, stderr: await this.#stderr };
    })();
    return this.#exited;
  }

  /** Kill the process if a test failed before it exited; a no-op once it has. */
  async kill(): Promise<void> {
    if (this.#exited === undefined) {
      try {
        this.#child.kill("SIGKILL");
      } catch (err) {
        if (!(err instanceof TypeError)) throw err; // it had exited already
      }
    }
    await this.exited();
  }

  ws(path: string): string {
    return `ws://127.0.0.1:${this.port}${path}`;
  }
}

/** `promise`, or a failure after `ms`, so a regression fails the test instead of hanging it. */
async function within<T>(promise: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type Member = { client: ChatClient; welcome: Event };

/** The hub (node) a chat member is on: the prefix of its id. */
function nodeOf(m: Member): string {
  return m.welcome.id.slice(0, m.welcome.id.indexOf("-"));
}

Deno.test("with --workers 2, a worker that crashes is logged, its members leave, its connection slots and gauges are given back, it is replaced, and stop() returns", async () => {
  // Every client comes from 127.0.0.1: the per-IP limit is the one that binds, one under the
  // total, so both counts must be given back exactly.
  const limit = 16;
  const h = new CrashHarness([
    "--workers",
    "2",
    "--max-connections",
    String(limit + 1),
    "--max-connections-per-ip",
    String(limit),
  ]);
  const members: Member[] = [];
  try {
    const nodes = await h.started(2);
    // The kernel picks each connection's worker: connect until both have members.
    while (new Set(members.map(nodeOf)).size < 2) {
      assert.ok(members.length < limit, `${limit} clients all landed on one worker`);
      members.push(await chatClient(h.ws(`/team?name=m${members.length}`)));
    }
    const victim = nodeOf(members[0]!);
    const dead = members.filter((m) => nodeOf(m) === victim);
    const alive = members.filter((m) => nodeOf(m) !== victim);
    await h.send({ type: "crash", index: nodes.get(victim) });

    const crash = await h.expect((e) => e.msg === "worker crashed", "the crash logged");
    assert.equal(crash.level, "error");
    assert.equal(crash.node, victim);
    assert.equal(crash.worker, nodes.get(victim));
    assert.match(crash.error, /crashed on command/);
    for (const m of dead) {
      const closed: Closed = await within(m.client.closed, 10_000, "a dead worker's socket");
      assert.notEqual(closed.code, 1000);
    }
    // Every member of the dead worker leaves, as seen from the surviving worker.
    for (const m of alive) {
      const gone = new Set(dead.map((d) => d.welcome.id));
      while (gone.size > 0) gone.delete((await m.client.until("leave")).id);
    }
    // A replacement listens on the same port, with a new hub.
    await h.expect(
      (e) => e.type === "listening" && e.index === nodes.get(victim) && e.node !== victim,
      "a replacement worker",
    );
    await h.expect((e) => e.msg === "worker restarted", "the restart logged");
    const url = `http://127.0.0.1:${h.port}`;
    await waitFor(async () => {
      const health = await (await fetch(`${url}/healthz`)).json();
      const metrics = await (await fetch(`${url}/metrics`)).text();
      return health.connections === alive.length &&
        metrics.includes(`chorus_connections{mode="chat",transport="websocket"} ${alive.length}\n`);
    }, "/healthz and /metrics count the survivors only");

    // The dead worker's slots are free again: up to the limit exactly, then refused.
    for (let i = alive.length; i < limit; i++) {
      alive.push(await chatClient(h.ws(`/team?name=n${i}`)));
    }
    const refused = await fetch(`${url}/team`, { headers: UPGRADE_HEADERS });
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).error.code, "too_many_connections");

    await h.send({ type: "stop" });
    await h.expect((e) => e.type === "stopped", "stop() to return");
    for (const m of alive) {
      assert.deepEqual(await m.client.closed, { code: 1001, reason: "server shutting down" });
    }
    assert.equal((await h.exited()).code, 0);
  } finally {
    await Promise.all(members.map((m) => m.client.close()));
    await h.kill();
  }
});

Deno.test("with --workers 2, a worker that keeps crashing stops the process with status 1", async () => {
  const h = new CrashHarness(["--workers", "2"]);
  try {
    const nodes = await h.started(2);
    const client = await rawClient(h.ws("/loop"));
    let node = [...nodes.keys()].find((n) => nodes.get(n) === 0)!;
    // MAX_RESTARTS (5) replacements, then the sixth crash within a minute is a crash loop.
    for (let crash = 1; crash <= 6; crash++) {
      await h.send({ type: "crash", index: 0 });
      if (crash === 6) break;
      const seen = new Set(h.nodes().keys());
      const next = await h.expect(
        (e) => e.type === "listening" && e.index === 0 && !seen.has(e.node) && e.node !== node,
        `replacement ${crash}`,
      );
      node = next.node;
    }
    const loop = await h.expect((e) => e.msg === "worker crash loop, stopping", "give up");
    assert.equal(loop.level, "error");
    assert.equal(loop.crashes, 6);
    assert.equal((await h.exited()).code, 1);
    // The client's worker, whichever it was, is gone: by a clean close or by the crash.
    await within(client.closed, 10_000, "the client's close");
  } finally {
    await h.kill();
  }
});

Deno.test("with --workers 2, stop() terminates a worker that does not answer, after its timeout", async () => {
  const h = new CrashHarness(["--stop-timeout-ms=300", "--workers", "2"]);
  try {
    await h.started(2);
    await h.send({ type: "hang", index: 1 });
    await h.expect((e) => e.type === "hanging" && e.index === 1, "worker 1 hanging");
    await h.send({ type: "stop" });
    const late = await h.expect((e) => e.msg === "workers did not stop in time, terminated", "");
    assert.equal(late.level, "error");
    assert.equal(late.workers, "1");
    await h.expect((e) => e.type === "stopped", "stop() to return");
    assert.equal((await h.exited()).code, 0);
  } finally {
    await h.kill();
  }
});
