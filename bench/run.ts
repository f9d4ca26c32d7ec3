/**
 * `deno task bench`: chorus against the classic Node `ws` broadcast server, measured in the
 * same run, with load generators in processes of their own (bench/loadgen.mjs).
 *
 *   deno task bench              quick profile, about 3–5 minutes
 *   deno task bench --full       larger rooms, ~19k idle connections, 3 runs each (medians)
 *   deno task bench --help       every flag
 *
 * Prints Markdown tables (each figure with its ratio to `ws`) and writes
 * bench/results/latest.json. Everything listens and connects on loopback only, every phase has
 * a time limit, and every process it starts is killed when it ends or is interrupted.
 *
 * bench/deno.json only repeats the root's `lineWidth`: bench/package.json (for `ws`) makes
 * `deno fmt bench` stop looking for the root deno.json, and the two would disagree.
 * @module
 */
import { parseArgs } from "node:util";

const BENCH = new URL(".", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const WS_VERSION = "8.23.0";
/** Sampled subscribers: they parse every payload (order, loss, latency); the rest count. */
const SAMPLED = 10;
/** Counting subscribers per load-generator process, and most such processes per case. */
const SUBS_PER_LOADGEN = 500;
const MAX_COUNTING_LOADGENS = 4;
/** Idle connections per load-generator process (each needs a file descriptor). */
const IDLE_PER_LOADGEN = 2500;
/** Members per room of the idle `chorus.v1` clients. */
const IDLE_CHAT_ROOM = 100;
/** How often the fan-out reads the server's RSS while the publisher floods, in ms. */
const RSS_SAMPLE_MS = 100;
/** A load generator above this share of one core may be what limits the figures. */
const SATURATED = 0.9;
const GROUPS = ["fanout", "chat", "idle", "stall"] as const;

type Group = typeof GROUPS[number];
/**
 * chorus; the classic Node `ws` example (the baseline); the naive Deno hub; bare Deno sockets
 * (idle only: what `Deno.upgradeWebSocket` costs with chorus' heartbeat and no code of ours).
 */
type ServerKind = "chorus" | "ws" | "deno" | "bare";
type Mode = "raw" | "chat";

// ------------------------------------------------------------------------------ options

interface Options {
  full: boolean;
  runs: number;
  only: Group[];
  servers: ServerKind[];
  warmup: number;
  measure: number;
  fanout: number[];
  sizes: number[];
  window: number;
  chatClients: number;
  chatRate: number;
  idle: number;
  stall: number;
  stallSubs: number;
  chorusDir: string;
  chorusArgs: string[];
  out: string;
}

const HELP = `Usage: deno task bench [flags]

Benchmarks chorus against the classic Node "ws" broadcast server and a naive Deno hub,
in the same run.

  --full               larger scenarios: 10,000 subscribers, 19,000 idle connections,
                       1,000 subscribers and 20 s in the stall, 10 s windows, 3 runs
  --runs N             runs of each case; tables show medians (quick 1, full 3)
  --only LIST          scenario groups: fanout, chat, idle, stall (default all)
  --servers LIST       chorus, ws, deno (naive Deno hub), bare (bare Deno sockets,
                       idle only); default all
  --warmup S           seconds of load before each window (quick 1, full 2)
  --measure S          seconds of each measurement window (quick 3, full 10)
  --fanout LIST        fan-out subscriber counts (quick 100,1000,5000; full adds 10000)
  --sizes LIST         fan-out message sizes in bytes (default 64,4096)
  --window N           fan-out messages in flight (default 32)
  --chat-clients N     clients in the all-to-all chat (default 200)
  --chat-rate N        messages per second each chat client sends (default 2)
  --idle N             idle connections (quick 10000, full 19000)
  --stall S            seconds the stalled reader stops reading (quick 10, full 20)
  --chorus-dir DIR     the chorus checkout to run (default this one), e.g. a git worktree
                       of an older commit, to measure what a change bought
  --chorus-args=ARGS   extra chorus flags, space-separated: --chorus-args="--workers 2"
  --out FILE           JSON results (default bench/results/latest.json)
  -h, --help           this help`;

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      full: { type: "boolean" },
      runs: { type: "string" },
      only: { type: "string" },
      servers: { type: "string" },
      warmup: { type: "string" },
      measure: { type: "string" },
      fanout: { type: "string" },
      sizes: { type: "string" },
      window: { type: "string" },
      "chat-clients": { type: "string" },
      "chat-rate": { type: "string" },
      idle: { type: "string" },
      stall: { type: "string" },
      "chorus-dir": { type: "string" },
      "chorus-args": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const full = values.full ?? false;
  const num = (name: string, raw: string | undefined, def: number, min: number, max: number) => {
    if (raw === undefined) return def;
    const n = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new Error(`--${name}: expected a number from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
  const ints = (name: string, raw: string | undefined, def: number[], max: number) =>
    raw === undefined ? def : raw.split(",").map((x) => Math.round(num(name, x, 0, 1, max)));
  const words = <T extends string>(
    name: string,
    raw: string | undefined,
    allowed: readonly T[],
  ) => {
    if (raw === undefined) return [...allowed];
    const list = raw.split(",").map((s) => s.trim());
    for (const w of list) {
      if (!allowed.includes(w as T)) throw new Error(`--${name}: unknown "${w}"`);
    }
    return list as T[];
  };
  return {
    full,
    runs: num("runs", values.runs, full ? 3 : 1, 1, 20),
    only: words("only", values.only, GROUPS),
    servers: words("servers", values.servers, ["chorus", "ws", "deno", "bare"] as const),
    warmup: num("warmup", values.warmup, full ? 2 : 1, 0, 60),
    measure: num("measure", values.measure, full ? 10 : 3, 1, 120),
    fanout: ints(
      "fanout",
      values.fanout,
      full ? [100, 1000, 5000, 10000] : [100, 1000, 5000],
      19000,
    ),
    sizes: ints("sizes", values.sizes, [64, 4096], 4096),
    window: num("window", values.window, 32, 1, 10000),
    chatClients: num("chat-clients", values["chat-clients"], 200, 2, 5000),
    chatRate: num("chat-rate", values["chat-rate"], 2, 0.1, 1000),
    idle: Math.round(num("idle", values.idle, full ? 19000 : 10000, 1, 19500)),
    stall: num("stall", values.stall, full ? 20 : 10, 1, 120),
    stallSubs: full ? 1000 : 100,
    chorusDir: (values["chorus-dir"] ?? ROOT).replace(/\/?$/, "/"),
    chorusArgs: values["chorus-args"]?.trim().split(/\s+/).filter((w) => w !== "") ?? [],
    out: values.out ?? `${BENCH}results/latest.json`,
  };
}

// ------------------------------------------------------------------------------ processes

/** Every child process started, so that any exit path kills them all. */
const children = new Set<Deno.ChildProcess>();

function killAll(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  children.clear();
}

function spawn(
  cmd: string,
  args: string[],
  stdin: "piped" | "null",
  cwd = ROOT,
): Deno.ChildProcess {
  const child = new Deno.Command(cmd, { args, cwd, stdin, stdout: "piped", stderr: "piped" })
    .spawn();
  children.add(child);
  child.status.finally(() => children.delete(child));
  return child;
}

/** Call `onLine` for each line of a stream, until it ends. */
async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  let buf = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) !== -1) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  } catch { /* the process was killed */ }
  if (buf !== "") onLine(buf);
}

/** Keep the last `max` lines a process printed, for error messages. */
function keep(lines: string[], line: string, max = 20): void {
  lines.push(line);
  if (lines.length > max) lines.shift();
}

/** A path as seen from the project root, for messages and the JSON. */
const relative = (path: string) => path.startsWith(ROOT) ? path.slice(ROOT.length) : path;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------------------ /proc

let clockTicks = 100;

/**
 * Standard output of a command, or "" when it fails. /proc is read through `cat`: Deno grants
 * /proc only to --allow-all, which the bench task does not ask for.
 */
async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdin: "null", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : "";
  } catch {
    return "";
  }
}

/** CPU seconds (user + system, all threads) a process has used; NaN when it is gone. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await output("cat", [`/proc/${pid}/stat`]);
  if (stat === "") return NaN;
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3, "state"
  return (Number(f[11]) + Number(f[12])) / clockTicks;
}

/** VmRSS and VmHWM (peak RSS) of a process, in KiB. */
async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await output("cat", [`/proc/${pid}/status`]);
  const field = (name: string) =>
    Number(status.match(new RegExp(`^${name}:\\s+(\\d+)`, "m"))?.[1] ?? NaN);
  return { rss: field("VmRSS"), peak: field("VmHWM") };
}

/**
 * Resident KiB of a process' malloc heap (`[heap]`: the main thread's allocations, where
 * Deno's and Node's per-socket native structures live) and of its other anonymous memory (the
 * JavaScript heap, thread stacks and other threads' allocations), from `/proc/<pid>/smaps`.
 */
async function memoryParts(pid: number): Promise<{ heap: number; anon: number }> {
  let heap = 0, anon = 0, kind: "heap" | "anon" | null = null;
  for (const line of (await output("cat", [`/proc/${pid}/smaps`])).split("\n")) {
    const map = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
    if (map) kind = map[1] === "[heap]" ? "heap" : map[1] === "" ? "anon" : null;
    else if (kind && line.startsWith("Rss:")) {
      const kib = Number(line.split(/\s+/)[1]);
      if (kind === "heap") heap += kib;
      else anon += kib;
    }
  }
  return { heap, anon };
}

/** Busy CPU seconds of the whole machine, all cores together. */
async function machineBusy(): Promise<number> {
  const f = (await output("cat", ["/proc/stat"])).split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - f[3] - f[4]) / clockTicks; // less idle and iowait
}

// ------------------------------------------------------------------------------ servers

/** How the servers are started. */
interface Binaries {
  /** `deno` arguments that run chorus, from `run` to its last flag. */
  chorus: string[];
  /** The checkout chorus runs from (its working directory). */
  chorusDir: string;
  node: string;
}

/**
 * The arguments of `deno task start` of the checkout in `dir` (its permissions stay in step
 * with the project), then a free loopback port, the limits that would throttle the bench
 * itself lifted (every other limit keeps its default), and any `--chorus-args`.
 */
async function chorusArgs(dir: string, extra: string[]): Promise<string[]> {
  let run = ["run", "--allow-net", "--allow-env=PORT,CHORUS_*", "main.ts"];
  try {
    const start: string = JSON.parse(await Deno.readTextFile(`${dir}/deno.json`)).tasks.start;
    const words = start.trim().split(/\s+/);
    if (words[0] === "deno" && words[1] === "run" && words.at(-1) === "main.ts") {
      run = words.slice(1);
    }
  } catch { /* keep the default */ }
  return [
    ...run,
    ...["--port", "0", "--hostname", "127.0.0.1"],
    ...["--rate-limit", "0", "--max-connections", "100000", "--max-connections-per-ip", "100000"],
    ...extra,
  ];
}

class Server {
  private constructor(
    readonly kind: ServerKind,
    readonly proc: Deno.ChildProcess,
    readonly port: number,
  ) {}

  get pid(): number {
    return this.proc.pid;
  }

  /** Start a server on a free loopback port; resolves once it says it is listening. */
  static async start(kind: ServerKind, bin: Binaries): Promise<Server> {
    const proc = kind === "chorus"
      ? spawn(Deno.execPath(), bin.chorus, "null", bin.chorusDir)
      : kind === "deno"
      ? spawn(Deno.execPath(), ["run", "--allow-net", `${BENCH}deno-server.ts`, "0"], "null")
      : kind === "bare"
      ? spawn(Deno.execPath(), [
        ...["run", "--v8-flags=--max-semi-space-size=1", "--allow-net"],
        ...[`${BENCH}bare-server.ts`, "0"],
      ], "null")
      : spawn(bin.node, [`${BENCH}ws-server.mjs`, "0"], "null");
    const lines: string[] = [];
    const port = new Promise<number>((resolve) => {
      readLines(proc.stdout, (line) => {
        keep(lines, line);
        const m = line.match(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
        if (m) resolve(Number(m[1]));
      });
    });
    readLines(proc.stderr, (line) => keep(lines, line));
    const exited = proc.status.then((s) => {
      throw new Error(`${kind} exited (${s.code}) before listening: ${lines.join(" | ")}`);
    });
    exited.catch(() => {}); // awaited only through the race below
    return new Server(
      kind,
      proc,
      await withTimeout(Promise.race([port, exited]), 30_000, `${kind} start`),
    );
  }

  async stop(): Promise<void> {
    try {
      this.proc.kill("SIGKILL");
    } catch { /* gone */ }
    await this.proc.status;
  }
}

// ------------------------------------------------------------------------------ loadgens

// deno-lint-ignore no-explicit-any
type Answer = any;

/** What bench/loadgen.mjs takes as its argument (see its `Config`). */
interface LoadgenConfig {
  port: number;
  path: string;
  chat: boolean;
  localAddress?: string;
  subs: number;
  sampled: number;
  publisher: boolean;
  size: number;
  window: number;
  stall?: boolean;
  rate?: number;
  concurrency?: number;
  deadlineMs?: number;
}

/** How load generators are run: `node`, or Deno's node:net when node is missing. */
interface Runtime {
  cmd: string;
  args: string[];
  label: string;
}

/** One load-generator process, driven by JSON commands on stdin, answering on stdout. */
class Loadgen {
  readonly #pending = new Map<number, (a: Answer) => void>();
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #exited: Promise<never>;
  readonly #lines: string[] = [];
  #nextId = 1;

  constructor(readonly name: string, readonly proc: Deno.ChildProcess) {
    this.#writer = proc.stdin.getWriter();
    this.#exited = proc.status.then((s) => {
      throw new Error(`loadgen ${name} exited (${s.code}): ${this.#lines.join(" | ")}`);
    });
    this.#exited.catch(() => {}); // awaited only through the races in send()
    readLines(proc.stdout, (line) => {
      let msg: Answer;
      try {
        msg = JSON.parse(line);
      } catch {
        return keep(this.#lines, line);
      }
      this.#pending.get(msg.id)?.(msg);
      this.#pending.delete(msg.id);
    });
    readLines(proc.stderr, (line) => keep(this.#lines, line));
  }

  static start(name: string, runtime: Runtime, config: LoadgenConfig): Loadgen {
    const args = [...runtime.args, `${BENCH}loadgen.mjs`, JSON.stringify(config)];
    return new Loadgen(name, spawn(runtime.cmd, args, "piped"));
  }

  async send(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Answer> {
    const id = this.#nextId++;
    const answer = new Promise<Answer>((resolve) => this.#pending.set(id, resolve));
    await this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, cmd, ...args }) + "\n"));
    const what = `loadgen ${this.name} ${cmd}`;
    const a = await withTimeout(Promise.race([answer, this.#exited]), timeoutMs, what);
    if (a.error) throw new Error(`${what}: ${a.error}`);
    return a;
  }

  async stop(): Promise<void> {
    try {
      this.proc.kill("SIGKILL");
    } catch { /* gone */ }
    await this.proc.status;
  }
}

// ------------------------------------------------------------------------------ measuring

/** Everything read at one edge of a measurement window. */
interface Snapshot {
  at: number;
  server: number;
  machine: number;
  loadgens: Answer[];
}

async function snapshot(server: Server, loadgens: Loadgen[], window?: string): Promise<Snapshot> {
  const [answers, cpu, machine] = await Promise.all([
    Promise.all(loadgens.map((l) => l.send("mark", { window }))),
    cpuSeconds(server.pid),
    machineBusy(),
  ]);
  return { at: performance.now(), server: cpu, machine, loadgens: answers };
}

interface Window {
  seconds: number;
  /** Messages received by subscribers per second: raw messages, or chorus.v1 `message` events. */
  deliveriesPerSec: number;
  /** Every chorus.v1 event (presence too), or raw messages, per second. */
  eventsPerSec: number;
  /** Cores busy, as fractions of one core. */
  serverCpu: number;
  loadgenCpu: number[];
  /** The rest of the machine: other users of this shared box, and the bench itself. */
  othersCpu: number;
}

function windowOf(a: Snapshot, b: Snapshot): Window {
  const seconds = (b.at - a.at) / 1000;
  let deliveriesPerSec = 0;
  let eventsPerSec = 0;
  const loadgenCpu: number[] = [];
  a.loadgens.forEach((x, i) => {
    const y = b.loadgens[i];
    const dt = (y.t - x.t) / 1000; // each process' own clock
    deliveriesPerSec += (y.msgs - x.msgs) / dt;
    eventsPerSec += (y.events - x.events) / dt;
    loadgenCpu.push((y.cpuUs - x.cpuUs) / 1e6 / dt);
  });
  const serverCpu = (b.server - a.server) / seconds;
  const machine = (b.machine - a.machine) / seconds;
  const othersCpu = Math.max(0, machine - serverCpu - loadgenCpu.reduce((s, c) => s + c, 0));
  return { seconds, deliveriesPerSec, eventsPerSec, serverCpu, loadgenCpu, othersCpu };
}

/** Loss, order and connection errors of sampled subscribers, one line each. */
function sampleErrors(stop: Answer): string[] {
  const out: string[] = [];
  stop.samples.forEach((s: Answer, i: number) => {
    if (s.stalled) return;
    const missing = s.lost + (s.missing ?? stop.sent - s.received);
    const who = `sampled subscriber ${i}`;
    if (missing > 0) out.push(`${who}: lost ${missing} of ${stop.sent} messages`);
    if (s.disorder > 0) out.push(`${who}: ${s.disorder} messages out of order`);
    if (s.bad > 0) out.push(`${who}: ${s.bad} unparseable payloads`);
    if (s.gone) out.push(`${who}: connection closed (code ${s.closeCode || 1006})`);
  });
  if (!stop.drained) out.push("not every message was delivered within the drain time");
  return out;
}

/**
 * Once the publisher has drained, every counting subscriber should receive every message exactly
 * once. The acknowledgements come from process 0 only, and a server may still be writing to the
 * others (chorus writes asynchronously, ws leaves bytes in kernel buffers), so this waits while
 * deliveries still make progress (up to 60 s). Returns the last reports and any shortfall.
 */
async function countingCheck(
  counters: Loadgen[],
  sent: number,
): Promise<{ reports: Answer[]; errors: string[] }> {
  const deadline = performance.now() + 60_000;
  let reports: Answer[] = [];
  let total = -1;
  let progressAt = performance.now();
  for (;;) {
    reports = await Promise.all(counters.map((l) => l.send("report")));
    const short = reports.some((r) => r.open === r.subs && r.msgs < r.subs * sent);
    const now = performance.now();
    const t = reports.reduce((s, r) => s + r.msgs, 0);
    if (t !== total) [total, progressAt] = [t, now];
    if (!short || now > deadline || now - progressAt > 2000) break;
    await sleep(100);
  }
  const errors: string[] = [];
  for (const r of reports) {
    const expected = r.subs * sent;
    if (r.open < r.subs) {
      errors.push(`${r.subs - r.open} of ${r.subs} counting subscribers of a loadgen disconnected`);
    } else if (r.msgs !== expected) {
      errors.push(`counting subscribers received ${r.msgs} messages, expected ${expected}`);
    }
  }
  return { reports, errors };
}

function loadgenErrors(answers: Answer[]): string[] {
  return answers.flatMap((a) =>
    Object.entries(a.errors ?? {}).map(([reason, n]) => `loadgen: ${n}× ${reason}`)
  );
}

function connectErrors(answers: Answer[]): string[] {
  const failed = answers.reduce((s, a) => s + a.failed, 0);
  return failed > 0 ? [`${failed} connections failed to open`] : [];
}

const pct = (x: number) => `${Math.round(x * 100)}%`;

function saturation(cpus: number[]): string[] {
  return cpus.flatMap((c, i) =>
    c > SATURATED
      ? [`loadgen ${i} used ${pct(c)} of a core: it may be what limits the figures`]
      : []
  );
}

/** Which side was saturated during a window. */
/**
 * Which side was saturated during a window. The server's JavaScript runs on one thread, so one
 * core is its limit, times the workers with `--chorus-args "--workers N"` (ws has one thread).
 */
function bound(w: Window, serverCores: number): string {
  const server = w.serverCpu >= SATURATED * serverCores;
  const loadgen = Math.max(...w.loadgenCpu) >= SATURATED;
  return server && loadgen ? "both" : server ? "server" : loadgen ? "loadgen" : "neither";
}

// ------------------------------------------------------------------------------ scenarios

interface Case {
  group: Group;
  /** Row label, the same for every server of one scenario. */
  scenario: string;
  server: ServerKind;
  mode: Mode;
  run: (ctx: Context) => Promise<Metrics>;
}

interface Context {
  server: Server;
  /** Cores the server can use: 1, or chorus' `--workers`. */
  serverCores: number;
  runtime: Runtime;
  opts: Options;
  loadgens: Loadgen[];
}

/** One case's figures. In the results, numbers are medians across runs. */
interface Metrics {
  [key: string]: number | string | null | string[] | number[];
  errors: string[];
  warnings: string[];
}

function startLoadgens(ctx: Context, configs: LoadgenConfig[]): Loadgen[] {
  const list = configs.map((c, i) =>
    Loadgen.start(`${ctx.loadgens.length + i}`, ctx.runtime, {
      deadlineMs: 600_000,
      localAddress: nextSource(),
      ...c,
    })
  );
  ctx.loadgens.push(...list);
  return list;
}

/** Split `n` into `parts` near-equal integers. */
function split(n: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));
}

/**
 * Each load generator connects from its own loopback address, a new one for every process
 * (127.0.0.2 … 127.0.0.253, then round again): the previous case's connections linger in
 * TIME_WAIT for a minute, and connect() slows down scanning past them for a free port.
 */
let sourceCursor = 0;
const nextSource = () => `127.0.0.${2 + (sourceCursor++ % 252)}`;

function connectAll(loadgens: Loadgen[], timeoutMs: number): Promise<Answer[]> {
  return Promise.all(loadgens.map((l) => l.send("connect", {}, timeoutMs)));
}

/**
 * Start the processes of a one-publisher room: process 0 holds the publisher and the sampled
 * subscribers (one clock for latency); counting subscribers live in the others. Counting
 * subscribers join first and the publisher last, so in the server's fan-out order the sampled
 * ones come after every counting one: their latency covers the whole broadcast.
 */
async function publisherRoom(
  ctx: Context,
  room: Omit<LoadgenConfig, "subs" | "sampled" | "publisher">,
  subs: number,
  stall: boolean,
): Promise<
  { p0: Loadgen; counters: Loadgen[]; all: Loadgen[]; failed: string[]; setupSec: number }
> {
  const sampled = Math.min(SAMPLED, subs);
  const counting = subs - sampled;
  const procs = Math.min(
    MAX_COUNTING_LOADGENS,
    Math.max(1, Math.ceil(counting / SUBS_PER_LOADGEN)),
  );
  const counters = startLoadgens(
    ctx,
    split(counting, procs).map((n) => ({
      ...room,
      subs: n,
      sampled: 0,
      publisher: false,
    })),
  );
  const [p0] = startLoadgens(ctx, [
    { ...room, subs: 0, sampled, publisher: true, stall },
  ]);
  const t0 = performance.now();
  const opened = [...await connectAll(counters, 300_000), ...await connectAll([p0], 60_000)];
  const connectedAt = performance.now();
  const all = [p0, ...counters];
  // Let presence events (chorus.v1 join storms) drain before anything is measured.
  const quietMs = room.chat ? 1000 : 500;
  const settled = await Promise.all(
    all.map((l) => l.send("settle", { quietMs, timeoutMs: 180_000 }, 190_000)),
  );
  const setupSec = (connectedAt - t0 + Math.max(...settled.map((s) => s.busyMs))) / 1000;
  const failed = connectErrors(opened);
  if (settled.some((s) => !s.quiet)) failed.push("the room never went quiet after the joins");
  return { p0, counters, all, failed, setupSec };
}

/** Fan-out: one publisher, `subs` subscribers in one room, at most `window` messages in flight. */
function fanout(subs: number, size: number, mode: Mode): Case["run"] {
  return async (ctx) => {
    const { server, opts } = ctx;
    const { p0, counters, all, failed, setupSec } = await publisherRoom(
      ctx,
      {
        port: server.port,
        path: `/fanout-${subs}`,
        chat: mode === "chat",
        size,
        window: opts.window,
      },
      subs,
      false,
    );
    const joined = (await memory(server.pid)).rss;
    await p0.send("start");
    const flood = rssSampler(server.pid);
    await sleep(opts.warmup * 1000);
    const a = await snapshot(server, all, "begin");
    await sleep(opts.measure * 1000);
    const b = await snapshot(server, all, "end");
    const mem = await memory(server.pid);
    const stop = await p0.send("stop", { drainMs: 10_000 }, 30_000);
    const floodPeak = await flood.stop();
    const { reports, errors: counted } = await countingCheck(counters, stop.sent);
    const peak = (await memory(server.pid)).peak; // the whole case: joins, flood and drain
    const w = windowOf(a, b);
    return {
      deliveriesPerSec: w.deliveriesPerSec,
      eventsPerSec: w.eventsPerSec,
      p50: stop.latency.p50,
      p99: stop.latency.p99,
      serverCpu: w.serverCpu,
      deliveriesPerCpuSec: w.serverCpu > 0 ? w.deliveriesPerSec / w.serverCpu : null,
      rssMiB: mem.rss / 1024,
      peakRssMiB: peak / 1024,
      joinedRssMiB: joined / 1024,
      floodPeakRssMiB: Math.max(floodPeak, mem.rss) / 1024,
      setupSec,
      loadgenCpu: w.loadgenCpu,
      loadgenCpuMax: Math.max(...w.loadgenCpu),
      othersCpu: w.othersCpu,
      bound: bound(w, ctx.serverCores),
      sent: stop.sent,
      errors: [
        ...failed,
        ...sampleErrors(stop),
        ...counted,
        ...loadgenErrors([stop, ...reports]),
      ],
      warnings: [...saturation(w.loadgenCpu), ...churn(w)],
    };
  };
}

/**
 * The highest RSS (KiB) of a process from now until `stop()`, read every
 * {@link RSS_SAMPLE_MS}: the peak of the flood alone, which VmHWM cannot give once the joins
 * (a `chorus.v1` join storm) have set a peak of their own.
 */
function rssSampler(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const rss = (await memory(pid)).rss;
      if (Number.isFinite(rss)) peak = Math.max(peak, rss);
      await sleep(RSS_SAMPLE_MS);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** Presence events (joins, leaves) inside a window mean the room was not steady. */
function churn(w: Window): string[] {
  const extra = w.eventsPerSec - w.deliveriesPerSec;
  return extra > w.deliveriesPerSec * 0.01
    ? [`${Math.round(extra)} presence events/s during the window: the room was not steady`]
    : [];
}

/** All-to-all chat: `clients` in one room, each sending `rate` messages per second. */
function allToAll(clients: number, rate: number, mode: Mode): Case["run"] {
  return async (ctx) => {
    const { server, opts } = ctx;
    const sampled = Math.min(SAMPLED, clients);
    const [lg] = startLoadgens(ctx, [{
      port: server.port,
      path: "/chat",
      chat: mode === "chat",
      size: 64,
      window: 0,
      publisher: false,
      subs: clients - sampled,
      sampled,
      rate,
    }]);
    const t0 = performance.now();
    const opened = await connectAll([lg], 120_000);
    const connectedAt = performance.now();
    const settled = await lg.send("settle", { quietMs: 500, timeoutMs: 60_000 }, 70_000);
    const setupSec = (connectedAt - t0 + settled.busyMs) / 1000;
    await lg.send("start");
    await sleep(opts.warmup * 1000);
    const a = await snapshot(server, [lg], "begin");
    await sleep(opts.measure * 1000);
    const b = await snapshot(server, [lg], "end");
    const mem = await memory(server.pid);
    const stop = await lg.send("stop", { drainMs: 10_000 }, 30_000);
    const w = windowOf(a, b);
    const offered = clients * rate * clients; // every message reaches every client, sender too
    const warnings = saturation(w.loadgenCpu);
    if (w.deliveriesPerSec < offered * 0.95) {
      warnings.push(`delivered ${Math.round(w.deliveriesPerSec)}/s of ${offered}/s offered`);
    }
    return {
      deliveriesPerSec: w.deliveriesPerSec,
      offeredPerSec: offered,
      p50: stop.latency.p50,
      p99: stop.latency.p99,
      serverCpu: w.serverCpu,
      rssMiB: mem.rss / 1024,
      setupSec,
      loadgenCpu: w.loadgenCpu,
      loadgenCpuMax: Math.max(...w.loadgenCpu),
      othersCpu: w.othersCpu,
      bound: bound(w, ctx.serverCores),
      sent: stop.sent,
      errors: [...connectErrors(opened), ...sampleErrors(stop), ...loadgenErrors([stop])],
      warnings,
    };
  };
}

/**
 * Idle connections: server memory per connection, and how fast they connect. Raw clients share
 * one room; `chorus.v1` clients join rooms of {@link IDLE_CHAT_ROOM} (in one room of 10,000 every
 * join would reach every member: 50 million presence events).
 */
function idle(count: number, mode: Mode): Case["run"] {
  return async (ctx) => {
    const { server } = ctx;
    await sleep(500);
    const before = (await memory(server.pid)).rss;
    const partsBefore = await memoryParts(server.pid);
    const procs = Math.max(1, Math.ceil(count / IDLE_PER_LOADGEN));
    const lgs = startLoadgens(
      ctx,
      split(count, procs).map((n, k) => ({
        port: server.port,
        path: mode === "chat" ? `/idle-${k}` : "/idle",
        roomSize: mode === "chat" ? IDLE_CHAT_ROOM : 0,
        chat: mode === "chat",
        size: 64,
        window: 0,
        publisher: false,
        subs: n,
        sampled: 0,
        concurrency: 64,
      })),
    );
    await Promise.all(lgs.map((l) => l.send("report"))); // started, before the clock does
    const a = await snapshot(server, lgs);
    const answers = await connectAll(lgs, 300_000);
    const b = await snapshot(server, lgs);
    const w = windowOf(a, b);
    const connected = answers.reduce((s, x) => s + x.opened, 0);
    await sleep(2000);
    const after = await memory(server.pid);
    const parts = await memoryParts(server.pid);
    const open = (await Promise.all(lgs.map((l) => l.send("mark")))).reduce(
      (s, x) => s + x.open,
      0,
    );
    const errors = [...connectErrors(answers), ...loadgenErrors(answers)];
    if (open < connected) errors.push(`${connected - open} connections closed while idle`);
    return {
      connections: connected,
      kibPerConn: connected > 0 ? (after.rss - before) / connected : null,
      heapKibPerConn: connected > 0 ? (parts.heap - partsBefore.heap) / connected : null,
      anonKibPerConn: connected > 0 ? (parts.anon - partsBefore.anon) / connected : null,
      connectPerSec: connected / w.seconds,
      serverCpuSecPer1k: connected > 0 ? (b.server - a.server) / connected * 1000 : null,
      rssBeforeMiB: before / 1024,
      rssMiB: after.rss / 1024,
      serverCpu: w.serverCpu,
      loadgenCpu: w.loadgenCpu,
      loadgenCpuMax: Math.max(...w.loadgenCpu),
      othersCpu: w.othersCpu,
      bound: bound(w, ctx.serverCores),
      errors,
      warnings: saturation(w.loadgenCpu),
    };
  };
}

/**
 * A stalled reader: one sampled subscriber stops reading (its socket is paused, so TCP flow
 * control pushes back on the server) while the publisher floods 4 KiB messages. Reports the
 * server's RSS growth, what became of the stalled client, and the other subscribers' rate.
 */
function stall(subs: number, stallSec: number, mode: Mode): Case["run"] {
  return async (ctx) => {
    const { server, opts } = ctx;
    const { p0, counters, all, failed } = await publisherRoom(
      ctx,
      {
        port: server.port,
        path: "/stall",
        chat: mode === "chat",
        size: 4096,
        window: opts.window,
      },
      subs,
      true,
    );
    await p0.send("start");
    await sleep(opts.warmup * 1000);
    const a = await snapshot(server, all);
    await sleep(Math.min(3, opts.measure) * 1000);
    const b = await snapshot(server, all, "begin");
    const rssBefore = (await memory(server.pid)).rss;
    await p0.send("stall");
    let rssPeak = rssBefore;
    const stallEnd = performance.now() + stallSec * 1000;
    while (performance.now() < stallEnd) {
      await sleep(250);
      rssPeak = Math.max(rssPeak, (await memory(server.pid)).rss);
    }
    const c = await snapshot(server, all, "end");
    await p0.send("resume");
    const stop = await p0.send("stop", { drainMs: 10_000 }, 30_000);
    // Give the stalled client time to read what the server kept for it, or its close frame.
    const stalledOf = async () => (await p0.send("report")).samples.find((s: Answer) => s.stalled);
    let stalled = await stalledOf();
    const deadline = performance.now() + 15_000;
    while (
      stalled && !stalled.gone && !stalled.closeCode && stalled.received < stop.sent &&
      performance.now() < deadline
    ) {
      await sleep(200);
      stalled = await stalledOf();
    }
    const { reports, errors: counted } = await countingCheck(counters, stop.sent);
    const before = windowOf(a, b);
    const during = windowOf(b, c);
    const of = stalled ? `${stalled.received} of ${stop.sent} messages` : "";
    const outcome = !stalled
      ? "unknown"
      : stalled.closeCode
      ? `closed by the server with code ${stalled.closeCode} after ${of}`
      : stalled.gone
      ? `connection lost after ${of}`
      : `kept; after resuming it read ${of}`;
    return {
      deliveriesPerSecBefore: before.deliveriesPerSec,
      deliveriesPerSec: during.deliveriesPerSec,
      duringVsBefore: during.deliveriesPerSec / before.deliveriesPerSec,
      p50: stop.latency.p50,
      p99: stop.latency.p99,
      rssBeforeMiB: rssBefore / 1024,
      rssPeakMiB: rssPeak / 1024,
      rssGrowthMiB: (rssPeak - rssBefore) / 1024,
      serverCpu: during.serverCpu,
      loadgenCpu: during.loadgenCpu,
      loadgenCpuMax: Math.max(...during.loadgenCpu),
      othersCpu: during.othersCpu,
      bound: bound(during, ctx.serverCores),
      stalledClient: outcome,
      errors: [
        ...failed,
        ...sampleErrors(stop),
        ...counted,
        ...loadgenErrors([stop, ...reports]),
      ],
      warnings: saturation(during.loadgenCpu),
    };
  };
}

const n0 = (x: number) => Math.round(x).toLocaleString("en-US");

function sizeLabel(bytes: number): string {
  return bytes >= 1024 && bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

/** Every case of the chosen groups; the servers of one scenario run back to back. */
function cases(opts: Options): Case[] {
  const out: Case[] = [];
  const variants = (modes: Mode[]): [ServerKind, Mode][] =>
    ([["ws", "raw"], ["deno", "raw"], ["bare", "raw"], ["chorus", "raw"], ["chorus", "chat"]] as [
      ServerKind,
      Mode,
    ][])
      .filter(([s, m]) => opts.servers.includes(s) && modes.includes(m));
  const add = (group: Group, scenario: string, modes: Mode[], run: (m: Mode) => Case["run"]) => {
    for (const [server, mode] of variants(modes)) {
      if (server === "bare" && group !== "idle") continue; // it relays nothing
      out.push({ group, scenario, server, mode, run: run(mode) });
    }
  };
  if (opts.only.includes("fanout")) {
    for (const subs of opts.fanout) {
      for (const size of opts.sizes) {
        const scenario = `fan-out · ${n0(subs)} subs · ${sizeLabel(size)}`;
        add("fanout", scenario, ["raw", "chat"], (m) => fanout(subs, size, m));
      }
    }
  }
  if (opts.only.includes("chat")) {
    const scenario = `all-to-all · ${n0(opts.chatClients)} clients × ${opts.chatRate} msg/s`;
    add("chat", scenario, ["raw", "chat"], (m) => allToAll(opts.chatClients, opts.chatRate, m));
  }
  if (opts.only.includes("idle")) {
    add("idle", `idle · ${n0(opts.idle)} connections`, ["raw", "chat"], (m) => idle(opts.idle, m));
  }
  if (opts.only.includes("stall")) {
    const scenario = `stalled reader · ${n0(opts.stallSubs)} subs · 4 KiB · ${opts.stall} s`;
    add("stall", scenario, ["raw", "chat"], (m) => stall(opts.stallSubs, opts.stall, m));
  }
  return out;
}

// ------------------------------------------------------------------------------ results

interface Result {
  group: Group;
  scenario: string;
  server: ServerKind;
  mode: Mode;
  median: Metrics;
  runs: Metrics[];
}

function median(values: number[]): number | null {
  const s = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Numbers: the median of the runs; lists of numbers: medians by position; text: every value. */
function medianOf(runs: Metrics[]): Metrics {
  const out: Metrics = { errors: [], warnings: [] };
  for (const k of new Set(runs.flatMap((r) => Object.keys(r)))) {
    const vals = runs.map((r) => r[k]).filter((v) => v !== undefined && v !== null);
    if (vals.length > 0 && vals.every((v) => typeof v === "number")) {
      out[k] = median(vals as number[]);
    } else if (vals.length > 0 && vals.every((v) => Array.isArray(v) && typeof v[0] === "number")) {
      const lists = vals as number[][];
      out[k] = lists[0].map((_, i) => median(lists.map((l) => l[i] ?? NaN)) ?? NaN);
    } else {
      out[k] = [...new Set(vals.flatMap((v) => Array.isArray(v) ? v.map(String) : [String(v)]))];
    }
  }
  return out;
}

const numberOf = (m: Metrics, k: string): number | null => {
  const v = m[k];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
};

function fmt(v: number | null, digits = 0): string {
  if (v === null) return "–";
  if (digits === 0) return n0(v);
  return v.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function serverLabel(r: { server: ServerKind; mode: Mode }): string {
  if (r.server === "bare") return "bare Deno sockets";
  if (r.server !== "chorus") return r.server === "ws" ? "ws" : "naive Deno";
  return r.mode === "chat" ? "chorus · chorus.v1" : "chorus · raw";
}

interface Column {
  title: string;
  key: string;
  digits?: number;
  pct?: boolean;
  /** False where a ratio to ws means nothing (inputs, the load generators, the host). */
  ratio?: boolean;
  /** Show only the ratio to this server's row instead of the figure and its ratio to ws. */
  vs?: ServerKind;
}

/** One row per server of each scenario; other servers' figures carry their ratio to ws. */
function table(results: Result[], columns: Column[]): string {
  const head = ["scenario", "server", ...columns.map((c) => c.title)];
  const rows: string[][] = [];
  let last = "";
  for (const r of results) {
    const row = (kind: ServerKind) =>
      results.find((x) => x.scenario === r.scenario && x.server === kind);
    const ws = row("ws");
    const cells = columns.map((c) => {
      const raw = r.median[c.key];
      if (Array.isArray(raw)) {
        return raw.length ? raw.map((v) => typeof v === "number" ? pct(v) : v).join(" · ") : "–";
      }
      const v = numberOf(r.median, c.key);
      if (c.vs) {
        const other = row(c.vs);
        const base = other && other !== r ? numberOf(other.median, c.key) : null;
        return v === null || !base ? "–" : `${(v / base).toFixed(2)}×`;
      }
      const shown = c.pct ? (v === null ? "–" : pct(v)) : fmt(v, c.digits);
      const base = ws && ws !== r && c.ratio !== false ? numberOf(ws.median, c.key) : null;
      return v === null || !base ? shown : `${shown} (${(v / base).toFixed(2)}×)`;
    });
    rows.push([r.scenario === last ? "" : r.scenario, serverLabel(r), ...cells]);
    last = r.scenario;
  }
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}

function report(results: Result[], opts: Options): string {
  const parts: string[] = [];
  const of = (g: Group) => results.filter((r) => r.group === g);
  const loadgen: Column = { title: "loadgen CPU", key: "loadgenCpu" };
  const others: Column = { title: "others' CPU", key: "othersCpu", pct: true, ratio: false };
  const serverCpu: Column = { title: "server CPU", key: "serverCpu", pct: true };
  if (of("fanout").length) {
    parts.push(
      `**Fan-out**: one publisher, ${opts.window} messages in flight; chorus.v1 counts events\n\n` +
        table(of("fanout"), [
          { title: "deliveries/s", key: "deliveriesPerSec" },
          { title: "p50 ms", key: "p50", digits: 1 },
          { title: "p99 ms", key: "p99", digits: 1 },
          serverCpu,
          { title: "deliveries/CPU-s", key: "deliveriesPerCpuSec" },
          { title: "RSS MiB", key: "rssMiB" },
          { title: "RSS after joins MiB", key: "joinedRssMiB" },
          { title: "flood peak RSS MiB", key: "floodPeakRssMiB" },
          { title: "peak RSS (VmHWM) MiB", key: "peakRssMiB" },
          { title: "setup s", key: "setupSec", digits: 1 },
          loadgen,
          others,
          { title: "saturated", key: "bound" },
        ]),
    );
  }
  if (of("chat").length) {
    parts.push(
      "**All-to-all chat**: fixed rate, 64 B; every client sends and receives\n\n" +
        table(of("chat"), [
          { title: "deliveries/s", key: "deliveriesPerSec", ratio: false },
          { title: "p50 ms", key: "p50", digits: 1 },
          { title: "p99 ms", key: "p99", digits: 1 },
          serverCpu,
          { title: "RSS MiB", key: "rssMiB" },
          loadgen,
          others,
        ]),
    );
  }
  if (of("idle").length) {
    parts.push(
      "**Idle connections**: one room; `chorus.v1` in rooms of 100; memory = (RSS after − RSS " +
        "before) / connections\n\n" +
        table(of("idle"), [
          { title: "connected", key: "connections", ratio: false },
          { title: "KiB/conn", key: "kibPerConn", digits: 1 },
          { title: "KiB/conn vs naive Deno", key: "kibPerConn", vs: "deno" },
          { title: "of it malloc heap", key: "heapKibPerConn", digits: 1, ratio: false },
          { title: "other anonymous", key: "anonKibPerConn", digits: 1, ratio: false },
          { title: "connects/s", key: "connectPerSec" },
          { title: "server CPU-s per 1k connects", key: "serverCpuSecPer1k", digits: 2 },
          { title: "RSS before MiB", key: "rssBeforeMiB" },
          { title: "RSS after MiB", key: "rssMiB" },
          loadgen,
          others,
        ]),
    );
  }
  if (of("stall").length) {
    parts.push(
      "**Stalled reader**: one subscriber stops reading while the publisher floods\n\n" +
        table(of("stall"), [
          { title: "others' deliveries/s before", key: "deliveriesPerSecBefore" },
          { title: "during the stall", key: "deliveriesPerSec" },
          { title: "during/before", key: "duringVsBefore", digits: 2, ratio: false },
          { title: "server RSS growth MiB", key: "rssGrowthMiB" },
          { title: "p99 ms during", key: "p99", digits: 1 },
          loadgen,
          others,
        ]) + "\n\n" +
        of("stall").map((r) =>
          `- ${serverLabel(r)}: the stalled client was ${
            (r.median.stalledClient as string[]).join("; ")
          }`
        ).join("\n"),
    );
  }
  return parts.join("\n\n");
}

// ------------------------------------------------------------------------------ main

/** Install the pinned `ws` into bench/node_modules when missing; the reason it failed, or null. */
async function ensureWs(): Promise<string | null> {
  try {
    const pkg = JSON.parse(await Deno.readTextFile(`${BENCH}node_modules/ws/package.json`));
    if (pkg.version === WS_VERSION) return null;
  } catch { /* not installed */ }
  console.error(`bench: installing ws@${WS_VERSION} into bench/node_modules`);
  try {
    const { success } = await new Deno.Command("npm", {
      args: [
        ...["install", "--prefix", BENCH, "--no-save", "--no-package-lock"],
        ...["--no-audit", "--no-fund", "--loglevel=error", `ws@${WS_VERSION}`],
      ],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    return success ? null : `\`npm install ws@${WS_VERSION}\` failed`;
  } catch {
    return "`npm` is not installed";
  }
}

/** The commit of a checkout, with "+changes" when its server code differs from that commit. */
async function gitDescribe(dir: string): Promise<string> {
  const head = (await output("git", ["-C", dir, "rev-parse", "--short", "HEAD"])).trim();
  if (!head) return "unknown";
  const changed = await output("git", ["-C", dir, "status", "--porcelain", "--", "main.ts", "src"]);
  return changed.trim() ? `${head}+changes` : head;
}

/** Run one case on a fresh server with fresh load generators; never throws. */
async function runCase(c: Case, runtime: Runtime, bin: Binaries, opts: Options): Promise<Metrics> {
  const workers = opts.chorusArgs.indexOf("--workers");
  const n = workers === -1 ? 1 : opts.chorusArgs[workers + 1];
  const serverCores = c.server !== "chorus"
    ? 1
    : n === "auto"
    ? navigator.hardwareConcurrency
    : Math.max(1, Number(n) || 1);
  const ctx: Context = {
    server: undefined as unknown as Server,
    serverCores,
    runtime,
    opts,
    loadgens: [],
  };
  try {
    ctx.server = await Server.start(c.server, bin);
    return await c.run(ctx);
  } catch (err) {
    return { errors: [`case failed: ${err instanceof Error ? err.message : err}`], warnings: [] };
  } finally {
    await Promise.all(ctx.loadgens.map((l) => l.stop()));
    await ctx.server?.stop();
  }
}

function progress(m: Metrics): string {
  const v = (k: string, digits = 0) => fmt(numberOf(m, k), digits);
  const cpu = (k: string) => numberOf(m, k) === null ? "–" : pct(numberOf(m, k)!);
  const lg = Array.isArray(m.loadgenCpu) ? `, loadgen max ${cpu("loadgenCpuMax")}` : "";
  if (m.kibPerConn !== undefined) {
    return `${v("connections")} connected, ${v("kibPerConn", 1)} KiB/conn, ${
      v("connectPerSec")
    } connects/s${lg}`;
  }
  if (m.deliveriesPerSec === undefined) return "no figures";
  return `${v("deliveriesPerSec")} deliveries/s, p99 ${v("p99", 1)} ms, server ${
    cpu("serverCpu")
  }${lg}, others ${cpu("othersCpu")}, saturated: ${m.bound ?? "–"}`;
}

async function main(): Promise<void> {
  const opts = parseOptions(Deno.args);
  clockTicks = Number((await output("getconf", ["CLK_TCK"])).trim()) || 100;
  const nodeVersion = (await output("node", ["--version"])).trim();
  const runtime: Runtime = nodeVersion
    ? { cmd: "node", args: [], label: `node ${nodeVersion}` }
    : { cmd: Deno.execPath(), args: ["run", "-A"], label: `deno ${Deno.version.deno} node:net` };
  const skipped: string[] = [];
  if (opts.servers.includes("ws")) {
    const why = nodeVersion ? await ensureWs() : "`node` is not installed";
    if (why) {
      skipped.push(`ws baseline: ${why}`);
      opts.servers = opts.servers.filter((s) => s !== "ws");
    }
  }
  if (!nodeVersion) {
    skipped.push("node: the load generators run on Deno's node:net, which costs more per frame");
  }
  for (const s of skipped) console.error(`bench: skipped ${s}`);
  const bin: Binaries = {
    chorus: await chorusArgs(opts.chorusDir, opts.chorusArgs),
    chorusDir: opts.chorusDir,
    node: "node",
  };
  const commit = await gitDescribe(opts.chorusDir);

  const list = cases(opts);
  const started = performance.now();
  console.error(
    `bench: ${list.length} cases × ${opts.runs} run(s), ${opts.full ? "full" : "quick"} profile, ` +
      `load generators on ${runtime.label}`,
  );
  const runs = new Map<Case, Metrics[]>(list.map((c) => [c, []]));
  let done = 0;
  for (let run = 0; run < opts.runs; run++) {
    for (const c of list) {
      const t0 = performance.now();
      const m = await runCase(c, runtime, bin, opts);
      runs.get(c)!.push(m);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      console.error(
        `[${++done}/${list.length * opts.runs}] ${c.scenario} · ${serverLabel(c)}: ${
          progress(m)
        } (${secs} s)`,
      );
      for (const e of m.errors) console.error(`  error: ${e}`);
      for (const w of m.warnings) console.error(`  warning: ${w}`);
    }
  }

  const results: Result[] = list.map((c) => ({
    group: c.group,
    scenario: c.scenario,
    server: c.server,
    mode: c.mode,
    median: medianOf(runs.get(c)!),
    runs: runs.get(c)!,
  }));
  const lines = (key: "errors" | "warnings") =>
    results.flatMap((r) => r.median[key].map((e) => `${r.scenario} · ${serverLabel(r)}: ${e}`));
  const date = new Date().toISOString();
  const cpus = navigator.hardwareConcurrency;
  const markdown =
    `chorus ${commit}${opts.chorusArgs.length ? ` ${opts.chorusArgs.join(" ")}` : ""}` +
    ` vs ws ${WS_VERSION}, ${opts.full ? "full" : "quick"} profile, ` +
    `${opts.runs === 1 ? "1 run" : `medians of ${opts.runs} runs`}, ${cpus} cores, ` +
    `${date.slice(0, 16).replace("T", " ")} UTC\n\n${report(results, opts)}`;
  const cpuinfo = await output("cat", ["/proc/cpuinfo"]);
  const json = {
    date,
    profile: opts.full ? "full" : "quick",
    seconds: Math.round((performance.now() - started) / 1000),
    chorus: { commit, dir: relative(opts.chorusDir) || ".", command: ["deno", ...bin.chorus] },
    options: { ...opts, chorusDir: relative(opts.chorusDir) || ".", out: relative(opts.out) },
    machine: {
      cpus,
      cpuModel: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? null,
      memoryMiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 20),
      openFileLimit: Number((await output("sh", ["-c", "ulimit -n"])).trim()) || null,
      deno: Deno.version.deno,
      loadgen: runtime.label,
      ws: opts.servers.includes("ws") ? WS_VERSION : null,
    },
    skipped,
    errors: lines("errors"),
    warnings: lines("warnings"),
    markdown,
    results,
  };
  const dir = opts.out.includes("/") ? opts.out.slice(0, opts.out.lastIndexOf("/")) : ".";
  await Deno.mkdir(dir, { recursive: true });
  // Five significant digits are plenty for figures this noisy, and keep the file readable.
  const round = (_: string, v: unknown) =>
    typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(5)) : v;
  await Deno.writeTextFile(opts.out, JSON.stringify(json, round, 2) + "\n");

  console.log(markdown + "\n");
  for (const s of skipped) console.log(`skipped: ${s}`);
  for (const w of json.warnings) console.log(`warning: ${w}`);
  for (const e of json.errors) console.log(`error: ${e}`);
  console.log(
    `${list.length} cases, ${opts.runs} run(s) each, ${json.seconds} s; ` +
      `JSON in ${relative(opts.out)}`,
  );
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.addSignalListener(signal, () => {
    killAll();
    Deno.exit(130);
  });
}
globalThis.addEventListener("unload", killAll);

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof Error ? err.message : err}`);
  killAll();
  Deno.exit(2);
}
