/**
 * A small publisher for chorus' HTTP API: simulated stock prices pushed into `/stocks` every
 * 500 ms with one `POST /api/publish` each, the way a real backend pushes live data.
 *
 * ```sh
 * CHORUS_API_KEY=... deno run --allow-net --allow-env=CHORUS_API_KEY examples/ticker.ts http://localhost:8080
 * ```
 *
 * Every tick is one JSON text message, `{"ts":…,"prices":{"ACME":120.31,…}}`: raw clients
 * of `ws://localhost:8080/stocks` get it as is, the page at http://localhost:8080/stocks
 * shows it as a message from `ticker`. Stop it with Ctrl-C.
 * @module
 */
import { parseArgs } from "node:util";

/** Starting prices of the simulated symbols. */
const START_PRICES: Readonly<Record<string, number>> = {
  ACME: 120,
  GLOBEX: 54,
  INITECH: 18.5,
  UMBRELLA: 310,
};

/** Where and how often the ticker publishes. */
export interface TickerOptions {
  /** The server's base URL, e.g. `http://localhost:8080`. */
  server: string;
  /** The server's `--api-key`. */
  key: string;
  room: string;
  intervalMs: number;
  /** The publisher name chat clients see. */
  name: string;
}

const USAGE =
  "usage: ticker.ts [--room /stocks] [--interval 500] [--name ticker] [--key KEY] SERVER_URL\n" +
  "       the key may also come from CHORUS_API_KEY";

/** Parse the command line; throws an Error with a one-line message when it is wrong. */
export function parseTickerArgs(
  args: string[],
  env: (name: string) => string | undefined,
): TickerOptions {
  const { values, positionals } = parseArgs({
    args,
    options: {
      room: { type: "string", default: "/stocks" },
      interval: { type: "string", default: "500" },
      name: { type: "string", default: "ticker" },
      key: { type: "string" },
    },
    allowPositionals: true,
  });
  const server = positionals[0] ?? "http://localhost:8080";
  if (positionals.length > 1) throw new Error(`unexpected argument "${positionals[1]}"`);
  if (!/^https?:\/\//.test(server)) throw new Error(`"${server}" is not an http(s) URL`);
  const key = values.key ?? env("CHORUS_API_KEY");
  if (!key) throw new Error("no API key: pass --key or set CHORUS_API_KEY");
  const intervalMs = Number(values.interval);
  if (!Number.isInteger(intervalMs) || intervalMs < 10) {
    throw new Error(`--interval: expected milliseconds (10 or more), got "${values.interval}"`);
  }
  return {
    server: server.replace(/\/+$/, ""),
    key,
    room: values.room,
    intervalMs,
    name: values.name,
  };
}

/** One step of a random walk: at most ±1 %, rounded to cents, never below one cent. */
export function nextPrice(price: number, random: () => number = Math.random): number {
  const moved = price * (1 + (random() - 0.5) * 0.02);
  return Math.max(0.01, Math.round(moved * 100) / 100);
}

/** The server refused the request in a way retrying cannot fix (bad key, API disabled…). */
export class PublishError extends Error {
  override name = "PublishError";
}

/** Publish one text message; resolves with the server's `delivered` count. */
export async function publish(options: TickerOptions, text: string): Promise<number> {
  const query = new URLSearchParams({ room: options.room, name: options.name });
  const res = await fetch(`${options.server}/api/publish?${query}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${options.key}`,
      "content-type": "text/plain; charset=utf-8",
    },
    body: text,
  });
  const body = await res.json();
  if (!res.ok) {
    const message = `${res.status} ${body?.error?.code}: ${body?.error?.message}`;
    if (res.status >= 400 && res.status < 500) throw new PublishError(message);
    throw new Error(message);
  }
  return body.delivered;
}

/** Publish a tick every `intervalMs` until `signal` aborts; a failed tick is reported, not fatal. */
export async function run(options: TickerOptions, signal: AbortSignal): Promise<void> {
  const prices = { ...START_PRICES };
  const started = Date.now();
  for (let tick = 0; !signal.aborted; tick++) {
    for (const symbol in prices) prices[symbol] = nextPrice(prices[symbol]!);
    const text = JSON.stringify({ ts: Date.now(), prices });
    try {
      const delivered = await publish(options, text);
      console.log(`${text} → ${delivered} recipient${delivered === 1 ? "" : "s"}`);
    } catch (err) {
      if (err instanceof PublishError || !(err instanceof Error)) throw err;
      console.error(`ticker: tick ${tick} failed, will retry: ${err.message.split("\n")[0]}`);
    }
    // Keep to the schedule even when a request was slow.
    await sleep(started + (tick + 1) * options.intervalMs - Date.now(), signal);
  }
}

/** Wait `ms`, or less when `signal` aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal.addEventListener("abort", done);
  });
}

if (import.meta.main) {
  let options: TickerOptions;
  try {
    options = parseTickerArgs(Deno.args, (name) => Deno.env.get(name));
  } catch (err) {
    if (!(err instanceof Error)) throw err;
    console.error(`ticker: ${err.message.split("\n")[0]}\n${USAGE}`);
    Deno.exit(2);
  }
  const stop = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stop.abort());
  }
  try {
    await run(options, stop.signal);
  } catch (err) {
    if (!(err instanceof PublishError)) throw err;
    console.error(`ticker: the server refused: ${err.message}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}
