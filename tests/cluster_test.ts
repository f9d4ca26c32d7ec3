/** `--workers`: several threads on one port acting as one hub, exercised through `main.ts`. */
import assert from "node:assert/strict";
import {
  chatClient,
  type Client,
  exchangeInOrder,
  type MainProcess,
  rawClient,
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
    assert.match(metrics, /^chorus_connections\{mode="raw"\} 40$/m);
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
    await others[9].client.close();
    const leave = await first.client.until("leave");
    assert.equal(leave.name, "m9");
    await Promise.all([first, ...others.slice(0, 9)].map((c) => c.client.close()));
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
  const main = await startMain(["--workers", "2"]);
  const clients = await Promise.all(
    Array.from({ length: 12 }, () => rawClient(`ws://127.0.0.1:${main.port}/bye`)),
  );
  main.child.kill("SIGTERM");
  for (const c of clients) {
    assert.deepEqual(await c.closed, { code: 1001, reason: "server shutting down" });
  }
  assert.equal((await main.output()).code, 0);
});
