/**
 * `examples/ticker.ts` as a user runs it: a child process publishing to a real server, with
 * raw and chat subscribers receiving its prices.
 */
import assert from "node:assert/strict";
import { nextPrice, parseTickerArgs } from "../examples/ticker.ts";
import { chatClient, DENO, rawClient, ROOT, runToEnd, startServer, waitFor } from "./helpers.ts";

const KEY = "ticker-test-key-0123456789";

/** `deno` arguments that run the ticker with the permissions its doc comment asks for. */
const TICKER = ["run", "--allow-net", "--allow-env=CHORUS_API_KEY", "examples/ticker.ts"];

/** The ticker as a child process. */
function spawnTicker(args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(DENO, {
    args: [...TICKER, ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

interface Tick {
  ts: number;
  prices: Record<string, number>;
}

Deno.test("the ticker example publishes prices to /stocks every 500 ms; subscribers receive them", async () => {
  const server = startServer({ apiKey: KEY });
  const raw = await rawClient(server.ws("/stocks"));
  const { client: chat } = await chatClient(server.ws("/stocks"));
  await waitFor(() => server.hub.connections === 2, "both subscribers in");
  const ticker = spawnTicker([server.origin], { CHORUS_API_KEY: KEY });
  try {
    const ticks: Tick[] = [];
    for (let i = 0; i < 5; i++) ticks.push(JSON.parse(await raw.text()));
    for (const tick of ticks) {
      assert.deepEqual(Object.keys(tick.prices).sort(), ["ACME", "GLOBEX", "INITECH", "UMBRELLA"]);
      for (const price of Object.values(tick.prices)) assert.ok(price > 0);
    }
    const spacing = (ticks[4]!.ts - ticks[0]!.ts) / 4;
    assert.ok(spacing >= 400 && spacing <= 1000, `ticks ${spacing} ms apart`);
    const event = await chat.next("message");
    assert.deepEqual(event.from, { id: "server", name: "ticker" });
    assert.deepEqual(JSON.parse(event.text), ticks[0]);
  } finally {
    ticker.kill("SIGTERM");
    const [status, stdout, stderr] = await Promise.all([
      ticker.status,
      new Response(ticker.stdout).text(),
      new Response(ticker.stderr).text(),
    ]);
    assert.equal(status.code, 0, stderr);
    assert.match(stdout, /^\{"ts":\d+,"prices":\{.*\}\} → 2 recipients$/m);
    await Promise.all([raw.close(), chat.close()]);
    await server.close();
  }
});

Deno.test("the ticker example stops with exit 1 and one line when the server refuses its key", async () => {
  const server = startServer({ apiKey: KEY });
  try {
    const out = await runToEnd(DENO, {
      args: [...TICKER, "--key", "not-the-key-at-all", server.origin],
      cwd: ROOT,
      env: {},
    });
    assert.equal(out.code, 1);
    assert.equal(out.stderr, "ticker: the server refused: 401 unauthorized: wrong API key\n");
  } finally {
    await server.close();
  }
});

Deno.test("the ticker's arguments: server URL, key from flag or environment, room, interval", () => {
  const env = (name: string) => name === "CHORUS_API_KEY" ? "from-env" : undefined;
  assert.deepEqual(parseTickerArgs(["http://h:1/"], env), {
    server: "http://h:1",
    key: "from-env",
    room: "/stocks",
    intervalMs: 500,
    name: "ticker",
  });
  const flagged = parseTickerArgs(
    ["--key", "k", "--room", "/fx", "--interval", "100", "http://h"],
    env,
  );
  assert.deepEqual([flagged.key, flagged.room, flagged.intervalMs], ["k", "/fx", 100]);
  assert.throws(() => parseTickerArgs(["http://h"], () => undefined), /no API key/);
  assert.throws(() => parseTickerArgs(["ftp://h"], env), /not an http/);
  assert.throws(() => parseTickerArgs(["--interval", "soon", "http://h"], env), /--interval/);
});

Deno.test("ticker prices walk at most 1 % per tick and never reach zero", () => {
  assert.equal(nextPrice(100, () => 1), 101);
  assert.equal(nextPrice(100, () => 0), 99);
  assert.equal(nextPrice(100, () => 0.5), 100);
  assert.equal(nextPrice(0.01, () => 0), 0.01);
});
