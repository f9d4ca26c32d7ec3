/**
 * Shared test helpers: in-process servers on port 0, real WebSocket clients whose messages
 * are awaited as events (never slept for), and a runner for `main.ts` as a child process.
 * @module
 */
import { type Config, DEFAULTS } from "../src/config.ts";
import { type AppOptions, createApp } from "../src/app.ts";
import type { Hub } from "../src/hub.ts";
import { createLogger, type Logger } from "../src/log.ts";
import { SUBPROTOCOL } from "../src/protocol.ts";
import { Inbox, within } from "./events.ts";

export { EVENT_TIMEOUT_MS, Inbox, waitFor, within } from "./events.ts";
export { freePort, redisMissing, type RedisServer, startRedis } from "./redis_server.ts";

/** The Deno executable running the tests, for child processes. */
export const DENO = Deno.execPath();

/** Absolute path of the project root. */
export const ROOT = new URL("..", import.meta.url).pathname;

/** The headers of a valid WebSocket upgrade, for requests made with `fetch` or by hand. */
export const UPGRADE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  upgrade: "websocket",
  connection: "Upgrade",
  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
  "sec-websocket-version": "13",
});

/**
 * Deno's `WebSocket`, whose constructor also takes handshake headers; the DOM typing that
 * `tests/page_test.ts` loads into the same check does not say so.
 */
const DenoWebSocket = WebSocket as unknown as new (
  url: string,
  options?: string | string[] | WebSocketOptions,
) => WebSocket;

/** A running in-process server. */
export interface TestServer {
  port: number;
  /** `http://127.0.0.1:PORT` */
  origin: string;
  hub: Hub;
  config: Config;
  logs: string[];
  /** `ws://127.0.0.1:PORT` + path */
  ws(path?: string): string;
  /** Close every socket like a shutdown would, then stop listening. */
  close(): Promise<void>;
}

/** Start a server on a free port with the defaults, overridden where a test needs it. */
export function startServer(
  overrides: Partial<Config> = {},
  options: Omit<AppOptions, "log"> = {},
): TestServer {
  // In memory unless a test asks for a store: servers of one run must not share ./data.
  const config: Config = {
    ...DEFAULTS,
    port: 0,
    hostname: "127.0.0.1",
    store: "memory",
    ...overrides,
  };
  const logs: string[] = [];
  const log: Logger = createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) });
  const app = createApp(config, { log, ...options });
  const server = Deno.serve({ port: 0, hostname: config.hostname, onListen() {} }, app.handler);
  const port = server.addr.port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    hub: app.hub,
    config,
    logs,
    ws: (path = "/") => `ws://127.0.0.1:${port}${path}`,
    async close() {
      await app.shutdown();
      await server.shutdown();
    },
  };
}

/** A close as a client saw it. */
export interface Closed {
  code: number;
  reason: string;
}

/**
 * A Deno WebSocket client whose frames and close are awaitable. `opened` and `closed` fail
 * after {@link EVENT_TIMEOUT_MS} (counted from each read of the property) instead of hanging.
 */
export class Client {
  readonly socket: WebSocket;
  readonly frames = new Inbox<string | ArrayBuffer>();
  readonly #url: string;
  readonly #closed: Promise<Closed>;
  readonly #opened: Promise<void>;

  /** `options` may also set handshake headers (a cookie), which Deno's WebSocket allows. */
  constructor(url: string, options?: string | string[] | WebSocketOptions) {
    this.#url = url;
    this.socket = new DenoWebSocket(url, options);
    this.socket.binaryType = "arraybuffer";
    this.socket.onmessage = (e) => this.frames.push(e.data);
    this.#closed = new Promise((resolve) => {
      this.socket.onclose = (e) => resolve({ code: e.code, reason: e.reason });
    });
    this.#opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => resolve();
      this.socket.onerror = (e) =>
        reject(new Error(`connect ${url}: ${(e as ErrorEvent).message}`));
    });
  }

  /** Resolves once the socket is open; rejects on a connection error or after a timeout. */
  get opened(): Promise<void> {
    return within(this.#opened, `the open of ${this.#url}`);
  }

  /** Resolves with the close as this client saw it; fails after a timeout. */
  get closed(): Promise<Closed> {
    return within(this.#closed, `the close of ${this.#url}`);
  }

  /** Next frame as text; fails if it is binary. */
  async text(): Promise<string> {
    const f = await this.frames.next("a text frame");
    if (typeof f !== "string") throw new Error(`expected a text frame, got ${f.byteLength} bytes`);
    return f;
  }

  send(data: string | ArrayBuffer | Uint8Array<ArrayBuffer>): void {
    this.socket.send(data);
  }

  /** Close and wait for the close handshake to finish. */
  async close(): Promise<Closed> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000);
    return await this.closed;
  }
}

/**
 * Every client sends `perSender` messages `"i:k"`; resolves once every client has received all
 * of them, failing at the first message out of order for its sender.
 */
export async function exchangeInOrder(clients: Client[], perSender: number): Promise<void> {
  const n = clients.length;
  clients.forEach((c, i) => {
    for (let k = 0; k < perSender; k++) c.send(`${i}:${k}`);
  });
  await Promise.all(clients.map(async (c) => {
    const next = new Array(n).fill(0);
    for (let j = 0; j < n * perSender; j++) {
      const [from = -1, seq] = (await c.text()).split(":").map(Number);
      if (seq !== next[from]) {
        throw new Error(`sender ${from}: got message ${seq}, expected ${next[from]}`);
      }
      next[from]!++;
    }
  }));
}

/** Connect a raw-mode client and wait until it is open. */
export async function rawClient(url: string): Promise<Client> {
  const c = new Client(url);
  await c.opened;
  return c;
}

/** A `chorus.v1` event as a plain object; tests look at fields loosely. */
// deno-lint-ignore no-explicit-any
export type Event = Record<string, any>;

/** A `chorus.v1` client: splits frames on newlines into individual events. */
export class ChatClient extends Client {
  readonly events = new Inbox<Event>();
  /** Frames received, to prove coalescing splits correctly. */
  frameCount = 0;

  /** `headers` are sent with the upgrade request (a cookie, an `Authorization`). */
  constructor(url: string, headers?: HeadersInit) {
    super(url, headers === undefined ? SUBPROTOCOL : { protocols: [SUBPROTOCOL], headers });
    this.socket.onmessage = (e) => {
      this.frameCount++;
      if (typeof e.data !== "string") throw new Error("chorus.v1 sent a binary frame");
      for (const line of e.data.split("\n")) this.events.push(JSON.parse(line));
    };
  }

  /** Next event; when `type` is given, fail if the next event is of another type. */
  async next(type?: string): Promise<Event> {
    const e = await this.events.next(type ? `a "${type}" event` : "an event");
    if (type && e.type !== type) {
      throw new Error(`expected a "${type}" event, got ${JSON.stringify(e)}`);
    }
    return e;
  }

  /** Skip events until one of `type` arrives. */
  async until(type: string): Promise<Event> {
    for (;;) {
      const e = await this.events.next(`a "${type}" event`);
      if (e.type === type) return e;
    }
  }

  sendEvent(event: Event): void {
    this.send(JSON.stringify(event));
  }

  say(text: string): void {
    this.sendEvent({ type: "message", text });
  }
}

/** Connect a chat client and wait for its `welcome`. */
export async function chatClient(
  url: string,
  headers?: HeadersInit,
): Promise<{ client: ChatClient; welcome: Event }> {
  const client = new ChatClient(url, headers);
  await client.opened;
  const welcome = await client.next("welcome");
  return { client, welcome };
}

/** An HTTP/1.1 WebSocket upgrade written by hand over TCP: status, headers and body. */
export async function upgradeOverTcp(
  port: number,
  target: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [
      `GET ${target} HTTP/1.1`,
      "Host: 127.0.0.1",
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    const dec = new TextDecoder();
    const buf = new Uint8Array(4096);
    let text = "";
    for (;;) {
      const end = text.indexOf("\r\n\r\n");
      if (end !== -1) {
        const head = text.slice(0, end);
        const status = Number(head.split(" ")[1]);
        const length = Number(head.match(/^content-length:\s*(\d+)/im)?.[1] ?? 0);
        const body = text.slice(end + 4);
        if (status === 101 || body.length >= length) return { status, head, body };
      }
      const n = await conn.read(buf);
      if (n === null) throw new Error(`connection closed after ${JSON.stringify(text)}`);
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
  } finally {
    conn.close();
  }
}

/** `main.ts` run exactly as `deno task start` runs it, with the same permissions. */
export const START_COMMAND = [
  DENO,
  "run",
  "--v8-flags=--max-semi-space-size=1",
  "--unstable-net",
  "--allow-net",
  "--allow-env=PORT,CHORUS_*,REDIS_DEBUG_MAINTENANCE,REDIS_EMIT_DIAGNOSTICS",
  "--allow-read=./src,./static,./data",
  "--allow-write=./data",
  "main.ts",
];

/** A `main.ts` child process with its listening URL. */
export interface MainProcess {
  child: Deno.ChildProcess;
  /** The `http://HOST:PORT/` from the listening line. */
  url: string;
  port: number;
  /**
   * Everything the process wrote to stdout after the listening line, and stderr, once it has
   * exited. Fails after {@link EVENT_TIMEOUT_MS} (and kills the process) if it does not exit.
   */
  output(): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Kill the process (SIGKILL) unless it already exited, and release its pipes. */
  stop(): Promise<void>;
  /** {@link MainProcess.stop}, for `await using main = await startMain()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Send `signal` to `child` unless it has already exited. */
export function killIfRunning(child: Deno.ChildProcess, signal: Deno.Signal = "SIGKILL"): void {
  try {
    child.kill(signal);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err; // "Child process has already terminated"
  }
}

/**
 * Run `main.ts` with the start task's permissions and wait for its listening line (at most
 * {@link EVENT_TIMEOUT_MS}; a process that prints none is killed and the call fails).
 */
export async function startMain(
  args: string[] = [],
  env: Record<string, string> = {},
  command: string[] = START_COMMAND,
): Promise<MainProcess> {
  // In memory unless the test chooses a store: processes of one run must not share ./data.
  const chosen = args.some((a) => /^--(store|data-dir|redis-url)/.test(a)) ||
    "CHORUS_STORE" in env || "CHORUS_DATA_DIR" in env || "CHORUS_REDIS_URL" in env;
  const child = new Deno.Command(command[0]!, {
    args: [...command.slice(1), "--port", "0", "--hostname", "127.0.0.1", ...args],
    cwd: ROOT,
    env: chosen ? env : { CHORUS_STORE: "memory", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderrText = new Response(child.stderr).text();
  let stdout = "";
  const firstLine = async () => {
    while (!stdout.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      stdout += value;
    }
  };
  /** Read stdout to its end and wait for the exit. */
  const drain = async () => {
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += value;
    }
    return { code: (await child.status).code, rest, stderr: await stderrText };
  };
  const fail = async (why: string): Promise<never> => {
    killIfRunning(child);
    const { stderr } = await drain();
    throw new Error(
      `${command.join(" ")} ${args.join(" ")}: ${why}; stdout=${stdout} stderr=${stderr}`,
    );
  };
  try {
    await within(firstLine(), "the listening line of main.ts");
  } catch (err) {
    return await fail((err as Error).message);
  }
  const match = stdout.match(/^chorus listening on (https?:\/\/[^\s]+:(\d+)\/)\n/);
  if (!match) return await fail("no listening line");

  let ended: Promise<{ code: number; rest: string; stderr: string }> | undefined;
  const finish = () => ended ??= drain();
  const output = async () => {
    try {
      const { code, rest, stderr } = await within(finish(), "main.ts to exit");
      return { code, stdout: stdout.slice(match[0].length) + rest, stderr };
    } catch (err) {
      killIfRunning(child);
      await finish();
      throw err;
    }
  };
  const stop = async () => {
    killIfRunning(child);
    await finish();
  };
  return {
    child,
    url: match[1]!,
    port: Number(match[2]),
    output,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** How long a child process may take to run to its end before it is killed and the test fails. */
export const PROCESS_TIMEOUT_MS = 30_000;

/** What a child process run to its end produced, decoded. */
export interface Finished {
  code: number;
  success: boolean;
  stdout: string;
  stderr: string;
}

/**
 * Run `command` to its end with stdout and stderr piped and decoded, writing `stdin` to it if
 * given. A process still running after `timeoutMs` is killed (SIGKILL) and the call fails.
 */
export async function runToEnd(
  command: string,
  options: Omit<Deno.CommandOptions, "stdin" | "stdout" | "stderr"> & { stdin?: string },
  timeoutMs = PROCESS_TIMEOUT_MS,
): Promise<Finished> {
  const { stdin, ...rest } = options;
  const child = new Deno.Command(command, {
    ...rest,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killIfRunning(child);
  }, timeoutMs);
  try {
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    const result = {
      code: out.code,
      success: out.success,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
    };
    if (timedOut) {
      throw new Error(
        `${command} ${(rest.args ?? []).join(" ")} did not exit within ${timeoutMs} ms ` +
          `(killed); stdout=${result.stdout} stderr=${result.stderr}`,
      );
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/** Run `main.ts` to completion (for flags that make it exit), within {@link PROCESS_TIMEOUT_MS}. */
export async function runMain(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await runToEnd(DENO, {
    args: ["run", "--allow-net", "--allow-env=PORT,CHORUS_*", "main.ts", ...args],
    cwd: ROOT,
    env,
  });
  return { code, stdout, stderr };
}

/** The next `n` chat messages a client receives, skipping presence events. */
export async function nextMessages(client: ChatClient, n: number): Promise<Event[]> {
  const out: Event[] = [];
  while (out.length < n) out.push(await client.until("message"));
  return out;
}

/** The offsets `[from+1, …, to]`: what a stream holds after offset `from`, up to `to`. */
export function offsetRange(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + 1 + i);
}

/** The offsets of some messages, in their order. */
export function offsetsOf(events: Event[]): number[] {
  return events.map((m) => m.offset);
}
