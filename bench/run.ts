/**
 * `deno task bench`: chorus against the classic Node `ws` broadcast server, measured in the
 * same run, with load generators in processes of their own (bench/loadgen.mjs).
 *
 *   deno task bench              quick profile, about 5 minutes (12 while presence is quadratic)
 *   deno task bench --full       larger rooms, ~19k idle connections, 3 runs each (medians)
 *   deno task bench --only idle,storm   issue #12: chat rooms of any size (idle, one room;
 *                                       the reconnect storm)
 *   deno task bench --only fanout,rooms,restart --stores sqlite,memory
 *                                       issue #13: what the durable store costs (fan-out and
 *                                       many small rooms on SQLite against memory; a restart
 *                                       over 1,000 rooms of kept messages)
 *   deno task bench --only sse --stores memory
 *                                       issue #14: chorus.v1 members over server-sent events
 *                                       next to chorus.v1 over WebSocket (fan-out to 1,000;
 *                                       10,000 idle in rooms of 100 and in one room)
 *   deno task bench --help       every flag
 *
 * Prints Markdown tables (each figure with its ratio to `ws`) and writes
 * bench/results/latest.json. chorus runs with the SQLite store (its default) in a fresh
 * temporary `--data-dir` per case, deleted after it, unless `--stores` says otherwise. Everything listens and connects on loopback only, every phase has
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
/** Members per room of the idle `chorus.v1` clients in rooms (the other idle case: one room). */
const IDLE_CHAT_ROOM = 100;
/**
 * Time limit of each phase of the idle and storm cases (every client welcomed, the room quiet,
 * every client back after the storm): a server whose presence is quadratic in the room's size
 * may need far longer, and the case then reports a timeout with what it got.
 */
const PHASE_MS = 180_000;
/** How often the fan-out reads the server's RSS while the publisher floods, in ms. */
const RSS_SAMPLE_MS = 100;
/** A load generator above this share of one core may be what limits the figures. */
const SATURATED = 0.9;
const GROUPS = ["fanout", "chat", "idle", "stall", "storm", "rooms", "restart", "sse"] as const;
/** Subscribers of the SSE group's fan-out (issue #14), over SSE and over WebSocket. */
const SSE_FANOUT = 1000;
/**
 * chorus' local stores (`--store`); `--stores` picks which the fan-out and rooms run on.
 * `none` passes no store flag at all: for a `--chorus-dir` from before issue #13.
 */
const STORES = ["sqlite", "memory", "none"] as const;
/** Members per load-generator process in the many-rooms case (every one parses payloads). */
const ROOM_MEMBERS_PER_LOADGEN = 1000;
/** The room the restart case's client joins, and how much history its `welcome` carries. */
const RESTART_HISTORY = 50;

type Group = typeof GROUPS[number];
type Store = typeof STORES[number];
/**
 * chorus; the classic Node `ws` example (the baseline); the naive Deno hub; bare Deno sockets
 * (idle only: what `Deno.upgradeWebSocket` costs with chorus' heartbeat and no code of ours).
 */
type ServerKind = "chorus" | "ws" | "deno" | "bare";
/** Raw WebSocket; `chorus.v1` over WebSocket; `chorus.v1` over server-sent events (members only). */
type Mode = "raw" | "chat" | "sse";

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
  storm: number;
  stormWindow: number;
  stores: Store[];
  rooms: number;
  roomRates: number[];
  restartRooms: number;
  restartMessages: number;
  restartDir: string | null;
  cpuProf: string | null;
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
  --only LIST          scenario groups: fanout, chat, idle, stall, storm, rooms, restart,
                       sse (chorus.v1 members over server-sent events next to chorus.v1
                       over WebSocket: fan-out to 1,000 at --sizes, --idle idle members in
                       rooms of 100 and in one room; chorus only) (default all)
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
  --storm N            clients in the reconnect storm's one room (default 10000)
  --storm-window N     reconnects in flight per load generator in the storm (default 0:
                       all at once)
  --stores LIST        chorus' stores: sqlite (in a fresh temporary --data-dir per case),
                       memory, none (no store flag: a --chorus-dir from before issue #13).
                       The fan-out and rooms groups run on each (ratios sqlite/memory when
                       both); the other groups on the first (default sqlite)
  --rooms N            rooms of 2 chorus.v1 members chatting in the rooms group (default 1000)
  --room-rates LIST    messages per second each member sends, one step each, until the
                       server falls behind (default 1,2,5,10,20)
  --restart-rooms N    rooms of the restart group's store (default 1000)
  --restart-messages N kept messages per room there (quick 1000, full 10000: 10 M messages,
                       about 2.5 minutes to build)
  --restart-dir DIR    build that store in DIR and keep it, or reuse the one already there
                       (default: a temporary directory, deleted at the end)
  --cpu-prof DIR       write a V8 CPU profile of every chorus case into DIR (chorus is
                       stopped with SIGTERM so that it can write it)
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
      storm: { type: "string" },
      "storm-window": { type: "string" },
      stores: { type: "string" },
      rooms: { type: "string" },
      "room-rates": { type: "string" },
      "restart-rooms": { type: "string" },
      "restart-messages": { type: "string" },
      "restart-dir": { type: "string" },
      "cpu-prof": { type: "string" },
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
    storm: Math.round(num("storm", values.storm, 10000, 1, 19000)),
    stormWindow: Math.round(num("storm-window", values["storm-window"], 0, 0, 19000)),
    stores: values.stores === undefined ? ["sqlite"] : words("stores", values.stores, STORES),
    rooms: Math.round(num("rooms", values.rooms, 1000, 1, 9000)),
    roomRates: values["room-rates"] === undefined
      ? [1, 2, 5, 10, 20]
      : values["room-rates"].split(",").map((x) => num("room-rates", x, 0, 0.1, 1000)),
    restartRooms: Math.round(num("restart-rooms", values["restart-rooms"], 1000, 1, 100_000)),
    restartMessages: Math.round(
      num("restart-messages", values["restart-messages"], full ? 10_000 : 1000, 10, 100_000),
    ),
    restartDir: values["restart-dir"] ?? null,
    cpuProf: values["cpu-prof"] ?? null,
    chorusDir: (values["chorus-dir"] ?? ROOT).replace(/\/?$/, "/"),
    chorusArgs: values["chorus-args"]?.trim().split(/\s+/).filter((w) => w !== "") ?? [],
    out: values.out ?? `${BENCH}results/latest.json`,
  };
}

// ------------------------------------------------------------------------------ processes

/** Every child process started, so that any exit path kills them all. */
const children = new Set<Deno.ChildProcess>();
/** Temporary directories (chorus' data dirs) still to delete, whatever way the bench ends. */
const tempDirs = new Set<string>();

function killAll(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  children.clear();
  for (const dir of tempDirs) removeDir(dir);
}

/** Delete a temporary directory; a failure is reported, not fatal. */
function removeDir(dir: string): void {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      console.error(`bench: could not delete ${dir}: ${err instanceof Error ? err.message : err}`);
    }
  }
  tempDirs.delete(dir);
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
  /** Where chorus writes V8 CPU profiles (`--cpu-prof`), or null for none. */
  cpuProf: string | null;
}

/** How one chorus process keeps rooms' streams. */
interface ChorusSetup {
  store: Store;
  /** The SQLite store's directory, kept; without it a fresh temporary one, deleted at stop. */
  dataDir?: string;
  /** More chorus flags, after the store's. */
  extra?: string[];
}

/**
 * chorus' `deno` arguments for one store: `--store`, and for SQLite `--data-dir DIR` with read
 * and write permission for DIR added to those the checkout's `start` task grants.
 */
function storeArgs(bin: Binaries, store: Store, dir: string | null, extra: string[]): string[] {
  const at = bin.chorus.indexOf("main.ts");
  const runtime = bin.chorus.slice(0, at);
  if (dir !== null) {
    for (const name of ["read", "write"]) {
      const flag = `--allow-${name}`;
      const i = runtime.findIndex((w) => w === flag || w.startsWith(`${flag}=`));
      if (i === -1) runtime.splice(1, 0, `${flag}=${dir}`);
      else if (runtime[i] !== flag) runtime[i] += `,${dir}`;
    }
  }
  if (bin.cpuProf !== null) runtime.splice(1, 0, "--cpu-prof", `--cpu-prof-dir=${bin.cpuProf}`);
  return [
    ...runtime,
    "main.ts",
    ...(store === "none" ? [] : ["--store", store]),
    ...(dir === null ? [] : ["--data-dir", dir]),
    ...extra,
    ...bin.chorus.slice(at + 1),
  ];
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
    /** `performance.now()` just before the spawn, and when the listening line came. */
    readonly spawnedAt: number,
    readonly listeningAt: number,
    /** A temporary data directory to delete once the server is gone, or null. */
    readonly tempDir: string | null,
    readonly gentle: boolean,
  ) {}

  get pid(): number {
    return this.proc.pid;
  }

  /**
   * Start a server on a free loopback port; resolves once it says it is listening. chorus
   * needs `setup`: its store (SQLite in a fresh temporary directory unless one is given).
   */
  static async start(kind: ServerKind, bin: Binaries, setup?: ChorusSetup): Promise<Server> {
    let tempDir: string | null = null;
    let chorus = bin.chorus;
    if (kind === "chorus") {
      const store = setup?.store ?? "sqlite";
      let dir: string | null = null;
      if (store === "sqlite") {
        dir = setup?.dataDir ?? null;
        if (dir === null) {
          dir = tempDir = await Deno.makeTempDir({ prefix: "chorus-bench-data-" });
          tempDirs.add(tempDir);
        }
      }
      chorus = storeArgs(bin, store, dir, setup?.extra ?? []);
    }
    const spawnedAt = performance.now();
    const proc = kind === "chorus"
      ? spawn(Deno.execPath(), chorus, "null", bin.chorusDir)
      : kind === "deno"
      ? spawn(Deno.execPath(), ["run", "--allow-net", `${BENCH}deno-server.ts`, "0"], "null")
      : kind === "bare"
      ? spawn(Deno.execPath(), [
        ...["run", "--v8-flags=--max-semi-space-size=1", "--allow-net"],
        ...[`${BENCH}bare-server.ts`, "0"],
      ], "null")
      : spawn(bin.node, [`${BENCH}ws-server.mjs`, "0"], "null");
    const lines: string[] = [];
    let listeningAt = 0;
    const port = new Promise<number>((resolve) => {
      readLines(proc.stdout, (line) => {
        keep(lines, line);
        const m = line.match(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
        if (m) {
          listeningAt = performance.now();
          resolve(Number(m[1]));
        }
      });
    });
    readLines(proc.stderr, (line) => keep(lines, line));
    const exited = proc.status.then((s) => {
      throw new Error(`${kind} exited (${s.code}) before listening: ${lines.join(" | ")}`);
    });
    exited.catch(() => {}); // awaited only through the race below
    try {
      const listening = await withTimeout(Promise.race([port, exited]), 120_000, `${kind} start`);
      const gentle = kind === "chorus" && bin.cpuProf !== null;
      return new Server(kind, proc, listening, spawnedAt, listeningAt, tempDir, gentle);
    } catch (err) {
      if (tempDir !== null) {
        try {
          proc.kill("SIGKILL");
        } catch { /* gone */ }
        await proc.status;
        removeDir(tempDir);
      }
      throw err;
    }
  }

  /**
   * Kill the server and delete its temporary data directory. With `--cpu-prof`, chorus gets
   * SIGTERM and 20 s to close and write its profile first.
   */
  async stop(): Promise<void> {
    if (this.gentle) {
      try {
        this.proc.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        console.error("bench: chorus did not exit within 20 s of SIGTERM; killed");
        try {
          this.proc.kill("SIGKILL");
        } catch { /* gone */ }
      }, 20_000);
      await this.proc.status;
      clearTimeout(timer);
    } else {
      try {
        this.proc.kill("SIGKILL");
      } catch { /* gone */ }
      await this.proc.status;
    }
    if (this.tempDir !== null) removeDir(this.tempDir);
  }
}

// ------------------------------------------------------------------------------ loadgens

// deno-lint-ignore no-explicit-any
type Answer = any;

/** What bench/loadgen.mjs takes as its argument (see its `Config`). */
interface LoadgenConfig {
  port: number;
  path: string;
  /** When above 0, connection i joins `${path}-${floor(i / roomSize)}`. */
  roomSize?: number;
  chat: boolean;
  /** Subscribers are `chorus.v1` members over server-sent events (the publisher is not). */
  sse?: boolean;
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

/** `reset`: the latency histograms start afresh at this "begin" (one per step of a case). */
async function snapshot(
  server: Server,
  loadgens: Loadgen[],
  window?: string,
  reset = false,
): Promise<Snapshot> {
  const [answers, cpu, machine] = await Promise.all([
    Promise.all(loadgens.map((l) => l.send("mark", { window, reset }))),
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
  /** Tells two cases of one server and mode apart (the idle `chorus.v1` room sizes). */
  variant?: string;
  /** chorus' store (chorus only). */
  store?: Store;
  /** The case starts (and stops) its servers itself: `ctx.server` is not set for it. */
  selfStarted?: boolean;
  run: (ctx: Context) => Promise<Metrics>;
}

interface Context {
  server: Server;
  bin: Binaries;
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
  const settled = await allQuiet(all, room.chat ? 1000 : 500, PHASE_MS);
  const setupSec = (connectedAt - t0) / 1000 + settled.busySec;
  const failed = connectErrors(opened);
  if (!settled.quiet) failed.push("the room never went quiet after the joins");
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
        chat: mode !== "raw",
        sse: mode === "sse",
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
      chat: mode !== "raw",
      sse: mode === "sse",
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
 * chorus' own count of the connections it closed, by reason (`chorus_disconnects_total` at
 * `/metrics`, except `client`: the client went away), e.g. "idle 4,764" when its heartbeat
 * dropped clients; [] for the other servers, or when chorus does not answer within 10 s.
 */
async function serverDisconnects(ctx: Context): Promise<string[]> {
  if (ctx.server.kind !== "chorus") return [];
  try {
    const res = await withTimeout(
      fetch(`http://127.0.0.1:${ctx.server.port}/metrics`),
      10_000,
      "chorus /metrics",
    );
    const text = await res.text();
    const out: string[] = [];
    for (const m of text.matchAll(/^chorus_disconnects_total\{reason="(\w+)"\} (\d+)/gm)) {
      if (m[1] !== "client" && Number(m[2]) > 0) out.push(`${m[1]} ${n0(Number(m[2]))}`);
    }
    return out;
  } catch {
    return [];
  }
}

/** Start `count` idle clients, {@link IDLE_PER_LOADGEN} per load-generator process. */
function idleLoadgens(
  ctx: Context,
  count: number,
  mode: Mode,
  path: string,
  roomSize: number,
  deadlineMs = 600_000,
): Loadgen[] {
  const procs = Math.max(1, Math.ceil(count / IDLE_PER_LOADGEN));
  return startLoadgens(
    ctx,
    split(count, procs).map((n, k) => ({
      port: ctx.server.port,
      path: roomSize > 0 ? `${path}-${k}` : path,
      roomSize,
      chat: mode !== "raw",
      sse: mode === "sse",
      size: 64,
      window: 0,
      publisher: false,
      subs: n,
      sampled: 0,
      concurrency: 64,
      deadlineMs,
    })),
  );
}

/**
 * Wait until every client is ready (raw: open; `chorus.v1`: it has its `welcome`), within
 * `ms`. `lastSec`: when the last one became ready, after its process started connecting.
 */
async function allReady(
  lgs: Loadgen[],
  ms: number,
): Promise<{ ready: number; failed: number; timedOut: boolean; lastSec: number }> {
  const timeoutMs = Math.max(1000, ms);
  const answers = await Promise.all(
    lgs.map((l) => l.send("ready", { timeoutMs }, timeoutMs + 30_000)),
  );
  return {
    ready: answers.reduce((s, a) => s + a.ready, 0),
    failed: answers.reduce((s, a) => s + a.failed, 0),
    timedOut: answers.some((a) => a.timedOut),
    lastSec: Math.max(...answers.map((a) => a.lastMs)) / 1000,
  };
}

/**
 * Wait until no client has received a frame for `quietMs` (presence events drained), within
 * `ms`. `quietSec`: how long it has been quiet when this returns.
 */
async function allQuiet(
  lgs: Loadgen[],
  quietMs: number,
  ms: number,
): Promise<{ quiet: boolean; busySec: number; quietSec: number }> {
  const timeoutMs = Math.max(1000, ms);
  const answers = await Promise.all(
    lgs.map((l) => l.send("settle", { quietMs, timeoutMs }, timeoutMs + 30_000)),
  );
  return {
    quiet: answers.every((a) => a.quiet),
    busySec: Math.max(...answers.map((a) => a.busyMs)) / 1000,
    quietSec: Math.min(...answers.map((a) => a.ms - a.busyMs)) / 1000,
  };
}

/**
 * Idle connections: server memory per connection, and how fast they connect. Raw clients share
 * one room; `chorus.v1` clients join rooms of `roomSize`, or all one room when it is 0 (issue
 * #12: there every join reaches every member and every `welcome` lists every member on a
 * server whose presence is quadratic). A client is ready once open (raw) or once it has its
 * `welcome` (`chorus.v1`); memory is read 2 s after the last frame any client received (2 s
 * after the last upgrade when nothing follows it), so the room's presence events are in.
 */
function idle(count: number, mode: Mode, roomSize: number): Case["run"] {
  return async (ctx) => {
    const { server } = ctx;
    await sleep(500);
    const before = (await memory(server.pid)).rss;
    const partsBefore = await memoryParts(server.pid);
    const lgs = idleLoadgens(ctx, count, mode, "/idle", roomSize);
    await Promise.all(lgs.map((l) => l.send("report"))); // started, before the clock does
    const t0 = performance.now();
    const a = await snapshot(server, lgs);
    const answers = await connectAll(lgs, PHASE_MS);
    const b = await snapshot(server, lgs);
    const ready = await allReady(lgs, PHASE_MS - (performance.now() - t0));
    const c = await snapshot(server, lgs);
    const settled = await allQuiet(lgs, 500, 60_000);
    await sleep(Math.max(0, 2000 - settled.quietSec * 1000));
    const after = await memory(server.pid);
    const parts = await memoryParts(server.pid);
    const end = await Promise.all(lgs.map((l) => l.send("report")));
    const open = end.reduce((s, x) => s + x.open, 0);
    const connected = answers.reduce((s, x) => s + x.opened, 0);
    const closedByServer = await serverDisconnects(ctx);
    const w = windowOf(a, b);
    const busy = windowOf(a, c); // until every client was ready
    const errors = [...connectErrors(answers), ...loadgenErrors(end)];
    if (ready.timedOut) {
      errors.push(
        `timeout: ${count - ready.ready - ready.failed} of ${count} clients not ready ` +
          `(chorus.v1: no welcome) after ${PHASE_MS / 1000} s`,
      );
    }
    if (!settled.quiet) {
      errors.push("the rooms never went quiet: memory read with frames in flight");
    }
    if (open < connected) {
      const why = closedByServer.length ? ` (chorus closed: ${closedByServer.join(", ")})` : "";
      errors.push(`${connected - open} connections closed while idle${why}`);
    }
    const welcomes = end.reduce((s, x) => s + x.welcomes, 0);
    const events = end.reduce((s, x) => s + x.events, 0);
    return {
      connections: connected,
      kibPerConn: connected > 0 ? (after.rss - before) / connected : null,
      heapKibPerConn: connected > 0 ? (parts.heap - partsBefore.heap) / connected : null,
      anonKibPerConn: connected > 0 ? (parts.anon - partsBefore.anon) / connected : null,
      connectPerSec: connected / w.seconds,
      // Timed out: at most this many per second.
      readyPerSec: ready.ready / (ready.timedOut ? PHASE_MS / 1000 : ready.lastSec),
      readyTimeout: ready.timedOut ? 1 : 0,
      readySec: ready.timedOut ? PHASE_MS / 1000 : ready.lastSec,
      welcomeKiB: welcomes > 0
        ? end.reduce((s, x) => s + x.welcomeBytes, 0) / welcomes / 1024
        : null,
      presencePerClient: mode !== "raw" && connected > 0 ? (events - welcomes) / connected : null,
      closedByServer,
      serverCpuSecPer1k: connected > 0 ? (c.server - a.server) / connected * 1000 : null,
      rssBeforeMiB: before / 1024,
      rssMiB: after.rss / 1024,
      peakRssMiB: after.peak / 1024,
      serverCpu: busy.serverCpu,
      loadgenCpu: busy.loadgenCpu,
      loadgenCpuMax: Math.max(...busy.loadgenCpu),
      othersCpu: busy.othersCpu,
      bound: bound(busy, ctx.serverCores),
      errors,
      warnings: saturation(busy.loadgenCpu),
    };
  };
}

/**
 * Sample the number of open files of a process every 500 ms until `stop()`; resolves to the
 * highest count seen. A server holds at most 20,000 here (the machine's limit), and in a storm
 * it holds the old sockets it has not closed yet beside the new ones.
 */
function sampleFiles(pid: number): { stop: () => Promise<number> } {
  let running = true;
  const done = (async () => {
    let peak = 0;
    while (running) {
      const n = Number((await output("sh", ["-c", `ls -U /proc/${pid}/fd | wc -l`])).trim());
      if (Number.isFinite(n)) peak = Math.max(peak, n);
      await sleep(500);
    }
    return peak;
  })();
  return {
    stop: () => {
      running = false;
      return done;
    },
  };
}

/**
 * The reconnect storm (issue #12): `count` clients in one room, all connected, welcomed and
 * quiet; then every client drops its socket at once and opens a new one at once (a server
 * restart, a network blip), `window` upgrades in flight per load generator (0: all of them).
 * A client whose new connection fails before it is back tries again after a backoff, as the
 * chorus page does. Times each client until it is back: raw clients on `open`, `chorus.v1`
 * clients once they have their `welcome`.
 */
function storm(count: number, window: number, mode: Mode): Case["run"] {
  return async (ctx) => {
    const { server } = ctx;
    const lgs = idleLoadgens(ctx, count, mode, "/storm", 0, 900_000);
    const t0 = performance.now();
    const answers = await connectAll(lgs, PHASE_MS);
    const ready = await allReady(lgs, PHASE_MS - (performance.now() - t0));
    const errors = connectErrors(answers);
    if (ready.timedOut || ready.ready < count) {
      errors.push(
        `setup: ${ready.ready} of ${count} clients ready${
          ready.timedOut ? ` after ${PHASE_MS / 1000} s (timeout)` : ""
        }; no storm`,
      );
      return { setupSec: (performance.now() - t0) / 1000, errors, warnings: [] };
    }
    const settled = await allQuiet(lgs, 1000, PHASE_MS - (performance.now() - t0));
    const setupSec = (performance.now() - t0) / 1000 - settled.quietSec;
    if (!settled.quiet) errors.push("setup: the room never went quiet before the storm");
    const setup = await Promise.all(lgs.map((l) => l.send("report")));
    errors.push(...loadgenErrors(setup).map((e) => `setup: ${e}`));
    const openBefore = setup.reduce((s, x) => s + x.open, 0);
    if (openBefore < count) {
      errors.push(
        `setup: ${count - openBefore} of ${count} clients were closed before the storm ` +
          "(they reconnect in it too)",
      );
    }

    const files = sampleFiles(server.pid);
    const a = await snapshot(server, lgs);
    const storms = await Promise.all(
      lgs.map((l) =>
        l.send("storm", {
          timeoutMs: PHASE_MS,
          ...(window > 0 ? { concurrency: window } : {}),
        }, PHASE_MS + 30_000)
      ),
    );
    const b = await snapshot(server, lgs);
    const peakFiles = await files.stop();
    const times = storms.flatMap((x) => x.ms as (number | null)[]);
    const back = times.filter((t): t is number => t !== null).sort((x, y) => x - y);
    const allBack = back.length === count;
    // After a timeout the room is still busy: no point waiting for it to go quiet.
    const quiet = allBack ? await allQuiet(lgs, 1000, 60_000) : null;
    const end = await Promise.all(lgs.map((l) => l.send("report")));
    const mem = await memory(server.pid);
    const closedByServer = await serverDisconnects(ctx);
    if (closedByServer.length) {
      errors.push(
        `chorus closed connections itself (setup and storm): ${closedByServer.join(", ")}`,
      );
    }

    if (!allBack) {
      errors.push(
        `timeout: ${count - back.length} of ${count} clients not back ` +
          `(chorus.v1: no welcome) after ${PHASE_MS / 1000} s`,
      );
    }
    if (quiet && !quiet.quiet) errors.push("the room never went quiet within 60 s after the storm");
    const w = windowOf(a, b);
    const welcomes = end.reduce((s, x) => s + x.welcomes, 0);
    const events = end.reduce((s, x) => s + x.events, 0);
    const nth = (p: number) =>
      back.length >= count * p ? back[Math.ceil(count * p) - 1]! / 1000 : null;
    return {
      clients: count,
      back: back.length,
      // Not everyone back: the figure is the time limit, a lower bound.
      backSec: allBack ? nth(1) : PHASE_MS / 1000,
      backTimeout: allBack ? 0 : 1,
      backP50Sec: nth(0.5),
      backP90Sec: nth(0.9),
      // From the drop until no client had received a frame for 1 s (less that second).
      quietSec: quiet?.quiet ? w.seconds + quiet.busySec : null,
      retries: storms.reduce((s, x) => s + x.retries, 0),
      serverCpuSec: b.server - a.server,
      serverCpu: w.serverCpu,
      issuedSec: Math.max(...storms.map((x) => x.issuedMs)) / 1000,
      slowTcp: storms.reduce((s, x) => s + x.slowTcp, 0),
      peakFiles,
      welcomeKiB: welcomes > 0
        ? end.reduce((s, x) => s + x.welcomeBytes, 0) / welcomes / 1024
        : null,
      presencePerClient: mode !== "raw" ? (events - welcomes) / count : null,
      closedByServer,
      setupSec,
      rssMiB: mem.rss / 1024,
      peakRssMiB: mem.peak / 1024,
      loadgenCpu: w.loadgenCpu,
      loadgenCpuMax: Math.max(...w.loadgenCpu),
      othersCpu: w.othersCpu,
      bound: bound(w, ctx.serverCores),
      errors: [...errors, ...loadgenErrors(end)],
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
        chat: mode !== "raw",
        sse: mode === "sse",
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

/**
 * Many small rooms (issue #13): `rooms` rooms of 2 `chorus.v1` members, each member sending to
 * its room at a steady rate, stepped through `rates` (messages per second per member) until the
 * server falls behind (stores less than 90% of what is offered). Every member parses every
 * payload: latency is from a send until the other member receives it, and the messages stored
 * are read from the offsets members see (the sum over rooms of the highest one: a fresh store
 * numbers each room 1, 2, 3, …), checked at the end against every message sent.
 */
function manyRooms(rooms: number, rates: number[]): Case["run"] {
  return async (ctx) => {
    const { server, opts } = ctx;
    const procs = Math.max(1, Math.ceil(rooms * 2 / ROOM_MEMBERS_PER_LOADGEN));
    const lgs = startLoadgens(
      ctx,
      split(rooms, procs).map((n, k) => ({
        port: server.port,
        path: `/rooms-${k}`,
        roomSize: 2,
        chat: true,
        size: 64,
        window: 0,
        publisher: false,
        subs: 0,
        sampled: n * 2,
        rate: rates[0]!,
        concurrency: 64,
      })),
    );
    const t0 = performance.now();
    const opened = await connectAll(lgs, PHASE_MS);
    const ready = await allReady(lgs, PHASE_MS - (performance.now() - t0));
    const settled = await allQuiet(lgs, 500, 60_000);
    const setupSec = (performance.now() - t0) / 1000 - settled.quietSec;
    const errors = connectErrors(opened);
    if (ready.timedOut || ready.ready < rooms * 2) {
      errors.push(`setup: ${ready.ready} of ${rooms * 2} members welcomed`);
    }
    const steps: {
      rate: number;
      offered: number;
      sent: number;
      stored: number;
      delivered: number;
      p50: number;
      p99: number;
      serverCpu: number;
      loadgenCpuMax: number;
      othersCpu: number;
    }[] = [];
    const warnings: string[] = [];
    await Promise.all(lgs.map((l) => l.send("start")));
    for (const [i, rate] of rates.entries()) {
      if (i > 0) await Promise.all(lgs.map((l) => l.send("rate", { rate })));
      await sleep(opts.warmup * 1000);
      const a = await snapshot(server, lgs, "begin", true);
      await sleep(opts.measure * 1000);
      const b = await snapshot(server, lgs, "end");
      const w = windowOf(a, b);
      const perSec = (key: "stored" | "sent") =>
        a.loadgens.reduce((sum, x, j) => {
          const y = b.loadgens[j];
          return sum + (y[key] - x[key]) / ((y.t - x.t) / 1000);
        }, 0);
      const worst = (key: "p50" | "p99") =>
        Math.max(...b.loadgens.map((y) => y.latency[key] ?? NaN));
      const step = {
        rate,
        offered: rooms * 2 * rate,
        sent: perSec("sent"),
        stored: perSec("stored"),
        delivered: w.deliveriesPerSec,
        p50: worst("p50"),
        p99: worst("p99"),
        serverCpu: w.serverCpu,
        loadgenCpuMax: Math.max(...w.loadgenCpu),
        othersCpu: w.othersCpu,
      };
      steps.push(step);
      console.error(
        `  ${rate} msg/s per member: offered ${n0(step.offered)}/s, sent ${n0(step.sent)}/s, ` +
          `stored ${n0(step.stored)}/s, p99 ${fmt(step.p99, 1)} ms, server ${
            pct(step.serverCpu)
          }, loadgen max ${pct(step.loadgenCpuMax)}`,
      );
      if (step.loadgenCpuMax >= SATURATED) {
        warnings.push(`${rate} msg/s per member: ${saturation([step.loadgenCpuMax])[0]}`);
      }
      if (step.stored < step.offered * 0.9) break; // fallen behind: the next step would too
    }
    const stops = await Promise.all(lgs.map((l) => l.send("stop", { drainMs: 30_000 }, 60_000)));
    const end = await Promise.all(lgs.map((l) => l.send("report")));
    const sent = stops.reduce((s, x) => s + x.sent, 0);
    const stored = end.reduce((s, x) => s + x.stored, 0);
    if (stored !== sent) {
      errors.push(`members saw offsets up to ${n0(stored)} in all, for ${n0(sent)} messages sent`);
    }
    for (const stop of stops) errors.push(...sampleErrors(stop));
    errors.push(...loadgenErrors(end));
    const kept = steps.filter((x) => x.stored >= x.offered * 0.95);
    const top = kept.at(-1);
    return {
      rooms,
      maxStoredPerSec: Math.max(...steps.map((x) => x.stored)),
      // The highest step the server kept up with (stored ≥ 95% of offered), and its latency.
      sustainedPerSec: top?.offered ?? null,
      sustainedP99: top?.p99 ?? null,
      sent,
      stored,
      setupSec,
      stepRate: steps.map((x) => x.rate),
      stepOffered: steps.map((x) => x.offered),
      stepSent: steps.map((x) => x.sent),
      stepStored: steps.map((x) => x.stored),
      stepDelivered: steps.map((x) => x.delivered),
      stepP50: steps.map((x) => x.p50),
      stepP99: steps.map((x) => x.p99),
      stepServerCpu: steps.map((x) => x.serverCpu),
      stepLoadgenCpuMax: steps.map((x) => x.loadgenCpuMax),
      stepOthersCpu: steps.map((x) => x.othersCpu),
      errors,
      warnings,
    };
  };
}

/** The restart case's store, built once per bench (or found in `--restart-dir`). */
let restartStore: Promise<{ dir: string; buildSec: number | null; mb: number }> | null = null;

/**
 * Build (or reuse) the restart case's store: `rooms` rooms `/restart-0` … of `messages` kept
 * messages each, by bench/sqlite_store.ts in a process of its own, the newest written now.
 */
function buildRestartStore(opts: Options) {
  restartStore ??= (async () => {
    let dir = opts.restartDir;
    if (dir === null) {
      dir = await Deno.makeTempDir({ prefix: "chorus-bench-restart-" });
      tempDirs.add(dir);
    }
    let buildSec: number | null = null;
    const exists = await Deno.stat(`${dir}/chorus.db`).then(() => true, (err) => {
      if (err instanceof Deno.errors.NotFound) return false;
      throw err;
    });
    if (exists) {
      console.error(`bench: reusing the restart store in ${dir}`);
    } else {
      console.error(
        `bench: building ${n0(opts.restartRooms)} rooms × ${n0(opts.restartMessages)} ` +
          `messages into ${dir}`,
      );
      const t0 = performance.now();
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          ...["run", `--allow-read=${dir}`, `--allow-write=${dir}`, `${BENCH}sqlite_store.ts`],
          ...["build", dir, String(opts.restartRooms), String(opts.restartMessages)],
          ...["/restart-", String(Date.now())],
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      if (!out.success) throw new Error(`building the restart store failed: ${text.trim()}`);
      console.error(`bench: ${text.trim()}`);
      buildSec = (performance.now() - t0) / 1000;
    }
    let bytes = 0;
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile) bytes += (await Deno.stat(`${dir}/${e.name}`)).size;
    }
    return { dir, buildSec, mb: bytes / 1e6 };
  })();
  return restartStore;
}

/**
 * Start chorus over `dataDir` (null: a fresh empty one) and join one room with a `chorus.v1`
 * client: milliseconds from the spawn to the listening line and to the client's `welcome`,
 * with what the welcome said.
 */
async function timedRestart(ctx: Context, dataDir: string | null, room: string) {
  const server = await Server.start("chorus", ctx.bin, {
    store: "sqlite",
    ...(dataDir === null ? {} : { dataDir }),
    // Keep every message of the built store: 10 M of them are about 1.5 GB, over the default.
    extra: ["--retain-bytes", String(2 ** 40), "--history", String(RESTART_HISTORY)],
  });
  ctx.server = server;
  try {
    const listenMs = server.listeningAt - server.spawnedAt;
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${room}`, "chorus.v1");
    const welcome = await withTimeout(
      new Promise<Answer>((resolve, reject) => {
        ws.onmessage = (e) => {
          const first = JSON.parse(String(e.data).split("\n")[0]!);
          if (first.type === "welcome") resolve(first);
        };
        ws.onerror = () => reject(new Error(`the client of ${room} failed`));
      }),
      120_000,
      "welcome after a restart",
    );
    const welcomeMs = performance.now() - server.spawnedAt;
    ws.close();
    const rss = (await memory(server.pid)).rss;
    return {
      listenMs,
      welcomeMs,
      history: (welcome.history ?? []).length as number,
      offset: welcome.offset as number,
      rssMiB: rss / 1024,
    };
  } finally {
    await server.stop();
  }
}

/**
 * Restart (issue #13): how long chorus takes from its spawn to listening, and to the `welcome`
 * (with {@link RESTART_HISTORY} messages of history) of a member of one room, over a store of
 * `rooms` × `messages` kept messages, against the same over an empty store.
 */
function restart(rooms: number, messages: number): Case["run"] {
  return async (ctx) => {
    const store = await buildRestartStore(ctx.opts);
    const room = `/restart-${Math.floor(rooms / 2)}`;
    const empty = await timedRestart(ctx, null, room);
    const full = await timedRestart(ctx, store.dir, room);
    const errors: string[] = [];
    const perRoom = Math.ceil(messages / 10) * 10;
    if (full.offset !== perRoom || full.history !== Math.min(RESTART_HISTORY, perRoom)) {
      errors.push(
        `the welcome of ${room} said offset ${full.offset} with ${full.history} messages of ` +
          `history; expected ${perRoom} and ${Math.min(RESTART_HISTORY, perRoom)}`,
      );
    }
    return {
      rooms,
      messages: rooms * perRoom,
      storeMB: store.mb,
      buildSec: store.buildSec,
      listenMs: full.listenMs,
      welcomeMs: full.welcomeMs,
      emptyListenMs: empty.listenMs,
      emptyWelcomeMs: empty.welcomeMs,
      rssMiB: full.rssMiB,
      emptyRssMiB: empty.rssMiB,
      history: full.history,
      errors,
      warnings: [],
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
    ([
      ["ws", "raw"],
      ["deno", "raw"],
      ["bare", "raw"],
      ["chorus", "raw"],
      ["chorus", "chat"],
      ["chorus", "sse"],
    ] as [ServerKind, Mode][])
      .filter(([s, m]) => opts.servers.includes(s) && modes.includes(m));
  // chorus runs on the first store listed, or on each (fan-out, many rooms).
  const add = (
    group: Group,
    scenario: string,
    modes: Mode[],
    run: (m: Mode) => Case["run"],
    variant?: string,
    stores: Store[] = opts.stores.slice(0, 1),
  ) => {
    for (const [server, mode] of variants(modes)) {
      if (server === "bare" && group !== "idle") continue; // it relays nothing
      for (const store of server === "chorus" ? stores : [undefined]) {
        out.push({
          group,
          scenario,
          server,
          mode,
          run: run(mode),
          ...(variant ? { variant } : {}),
          ...(store ? { store } : {}),
        });
      }
    }
  };
  if (opts.only.includes("fanout")) {
    for (const subs of opts.fanout) {
      for (const size of opts.sizes) {
        const scenario = `fan-out · ${n0(subs)} subs · ${sizeLabel(size)}`;
        add("fanout", scenario, ["raw", "chat"], (m) => fanout(subs, size, m), undefined, [
          ...opts.stores,
        ]);
      }
    }
  }
  if (opts.only.includes("chat")) {
    const scenario = `all-to-all · ${n0(opts.chatClients)} clients × ${opts.chatRate} msg/s`;
    add("chat", scenario, ["raw", "chat"], (m) => allToAll(opts.chatClients, opts.chatRate, m));
  }
  if (opts.only.includes("idle")) {
    // Raw clients in one room; chorus.v1 clients in rooms of 100, then all in one room.
    const scenario = `idle · ${n0(opts.idle)} connections`;
    add("idle", scenario, ["raw"], (m) => idle(opts.idle, m, 0));
    const rooms = `rooms of ${IDLE_CHAT_ROOM}`;
    add("idle", scenario, ["chat"], (m) => idle(opts.idle, m, IDLE_CHAT_ROOM), rooms);
    add("idle", scenario, ["chat"], (m) => idle(opts.idle, m, 0), "one room");
  }
  if (opts.only.includes("stall")) {
    const scenario = `stalled reader · ${n0(opts.stallSubs)} subs · 4 KiB · ${opts.stall} s`;
    add("stall", scenario, ["raw", "chat"], (m) => stall(opts.stallSubs, opts.stall, m));
  }
  if (opts.only.includes("storm")) {
    const window = opts.stormWindow ? ` · ${opts.stormWindow} in flight per loadgen` : "";
    const scenario = `reconnect storm · ${n0(opts.storm)} clients · one room${window}`;
    add("storm", scenario, ["raw", "chat"], (m) => storm(opts.storm, opts.stormWindow, m));
  }
  if (opts.only.includes("rooms")) {
    const scenario = `many rooms · ${n0(opts.rooms)} rooms × 2 members · 64 B`;
    add("rooms", scenario, ["chat"], () => manyRooms(opts.rooms, opts.roomRates), undefined, [
      ...opts.stores,
    ]);
  }
  if (opts.only.includes("sse")) {
    // Issue #14: each scenario's WebSocket row is the baseline of its SSE row.
    for (const size of opts.sizes) {
      const scenario = `SSE fan-out · ${n0(SSE_FANOUT)} subs · ${sizeLabel(size)}`;
      add("sse", scenario, ["chat", "sse"], (m) => fanout(SSE_FANOUT, size, m));
    }
    for (const roomSize of [IDLE_CHAT_ROOM, 0]) {
      const rooms = roomSize > 0 ? `rooms of ${roomSize}` : "one room";
      const scenario = `SSE idle · ${n0(opts.idle)} members · ${rooms}`;
      add("sse", scenario, ["chat", "sse"], (m) => idle(opts.idle, m, roomSize));
    }
  }
  if (opts.only.includes("restart") && opts.servers.includes("chorus")) {
    const perRoom = Math.ceil(opts.restartMessages / 10) * 10;
    out.push({
      group: "restart",
      scenario: `restart · ${n0(opts.restartRooms)} rooms × ${n0(perRoom)} messages`,
      server: "chorus",
      mode: "chat",
      store: "sqlite",
      selfStarted: true,
      run: restart(opts.restartRooms, opts.restartMessages),
    });
  }
  return out;
}

// ------------------------------------------------------------------------------ results

interface Result {
  group: Group;
  scenario: string;
  server: ServerKind;
  mode: Mode;
  variant?: string;
  store?: Store;
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
      // Runs may differ in length (the rooms case stops stepping when the server falls behind).
      const longest = Math.max(...lists.map((l) => l.length));
      out[k] = Array.from(
        { length: longest },
        (_, i) => median(lists.map((l) => l[i] ?? NaN)) ?? NaN,
      );
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

function serverLabel(
  r: { server: ServerKind; mode: Mode; variant?: string; store?: Store },
): string {
  if (r.server === "bare") return "bare Deno sockets";
  if (r.server !== "chorus") return r.server === "ws" ? "ws" : "naive Deno";
  const label = [
    r.mode === "sse"
      ? "chorus · chorus.v1 over SSE"
      : r.mode === "chat"
      ? "chorus · chorus.v1"
      : "chorus · raw",
  ];
  if (r.variant) label.push(r.variant);
  if (r.store) label.push(r.store);
  return label.join(" · ");
}

interface Column {
  title: string;
  key: string;
  digits?: number;
  pct?: boolean;
  /** False where a ratio to ws means nothing (inputs, the load generators, the host). */
  ratio?: boolean;
  /**
   * Show only the ratio to this server's row (in that mode, when given) instead of the figure
   * and its ratio to ws. With `store`: to chorus' row of the same mode on that store (chorus
   * rows only).
   */
  vs?: { server: ServerKind; mode?: Mode; store?: Store };
  /**
   * The figure is only a bound where this key is 1 (a phase hit its time limit): shown with
   * this sign, e.g. "≥ 180 (timeout)".
   */
  bound?: { flag: string; sign: "≥" | "≤" };
}

/** One row per server of each scenario; other servers' figures carry their ratio to ws. */
function table(results: Result[], columns: Column[]): string {
  const head = ["scenario", "server", ...columns.map((c) => c.title)];
  const rows: string[][] = [];
  let last = "";
  for (const r of results) {
    const row = (kind: ServerKind, mode?: Mode, store?: Store) =>
      results.find((x) =>
        x.scenario === r.scenario && x.server === kind &&
        (mode === undefined || x.mode === mode) && (store === undefined || x.store === store)
      );
    const ws = row("ws");
    const cells = columns.map((c) => {
      const raw = r.median[c.key];
      if (Array.isArray(raw)) {
        return raw.length ? raw.map((v) => typeof v === "number" ? pct(v) : v).join(" · ") : "–";
      }
      const v = numberOf(r.median, c.key);
      const bounded = (x: Result) => c.bound && (numberOf(x.median, c.bound.flag) ?? 0) >= 0.5;
      const sign = bounded(r) ? `${c.bound!.sign} ` : "";
      const ratio = (other: Result | undefined) => {
        const base = other && other !== r ? numberOf(other.median, c.key) : null;
        return v === null || !base || bounded(other!) ? null : `${sign}${(v / base).toFixed(2)}×`;
      };
      if (c.vs?.store && r.server !== c.vs.server) return "–";
      if (c.vs) {
        return ratio(row(c.vs.server, c.vs.store ? r.mode : c.vs.mode, c.vs.store)) ?? "–";
      }
      const shown = c.pct ? (v === null ? "–" : pct(v)) : fmt(v, c.digits);
      const vsWs = c.ratio !== false ? ratio(ws) : null;
      const figure = v === null ? shown : `${sign}${shown}${sign ? " (timeout)" : ""}`;
      return vsWs === null ? figure : `${figure} (${vsWs})`;
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
  const chorusRaw = { server: "chorus", mode: "raw" } as const;
  const readyBound = { flag: "readyTimeout", sign: "≤" } as const;
  const backBound = { flag: "backTimeout", sign: "≥" } as const;
  const memoryRow = { server: "chorus", store: "memory" } as const;
  if (of("fanout").length) {
    parts.push(
      `**Fan-out**: one publisher, ${opts.window} messages in flight; chorus.v1 counts events\n\n` +
        table(of("fanout"), [
          { title: "deliveries/s", key: "deliveriesPerSec" },
          ...(opts.stores.includes("memory") && opts.stores.length > 1
            ? [{ title: "vs memory", key: "deliveriesPerSec", vs: memoryRow }]
            : []),
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
      `**Idle connections**: raw in one room; \`chorus.v1\` in rooms of ${IDLE_CHAT_ROOM} and in ` +
        "one room; memory = (RSS after − RSS before) / connections; ready = open (raw) or " +
        "welcomed (`chorus.v1`)\n\n" +
        table(of("idle"), [
          { title: "connected", key: "connections", ratio: false },
          { title: "KiB/conn", key: "kibPerConn", digits: 1 },
          { title: "KiB/conn vs naive Deno", key: "kibPerConn", vs: { server: "deno" } },
          { title: "vs chorus raw", key: "kibPerConn", vs: chorusRaw },
          { title: "of it malloc heap", key: "heapKibPerConn", digits: 1, ratio: false },
          { title: "other anonymous", key: "anonKibPerConn", digits: 1, ratio: false },
          { title: "connects/s", key: "connectPerSec" },
          { title: "ready/s", key: "readyPerSec", bound: readyBound },
          { title: "vs chorus raw", key: "readyPerSec", vs: chorusRaw, bound: readyBound },
          { title: "server CPU-s per 1k connects", key: "serverCpuSecPer1k", digits: 2 },
          { title: "welcome KiB", key: "welcomeKiB", digits: 1, ratio: false },
          { title: "presence events/client", key: "presencePerClient", ratio: false },
          { title: "closed by chorus", key: "closedByServer" },
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
  if (of("storm").length) {
    parts.push(
      "**Reconnect storm**: every client of one room drops and reconnects at once; back = open " +
        "(raw) or welcomed (`chorus.v1`), in seconds after the drop\n\n" +
        table(of("storm"), [
          { title: "back", key: "back", ratio: false },
          { title: "all back s", key: "backSec", digits: 2, bound: backBound },
          { title: "vs chorus raw", key: "backSec", vs: chorusRaw, bound: backBound },
          { title: "p50 s", key: "backP50Sec", digits: 2 },
          { title: "p90 s", key: "backP90Sec", digits: 2 },
          { title: "room quiet s", key: "quietSec", digits: 1 },
          { title: "retries", key: "retries", ratio: false },
          { title: "server CPU-s", key: "serverCpuSec", digits: 1 },
          { title: "reconnects issued s", key: "issuedSec", digits: 2 },
          { title: "TCP connects ≥ 1 s", key: "slowTcp", ratio: false },
          { title: "server files (peak)", key: "peakFiles", ratio: false },
          { title: "welcome KiB", key: "welcomeKiB", digits: 1, ratio: false },
          { title: "presence events/client", key: "presencePerClient", ratio: false },
          { title: "closed by chorus", key: "closedByServer" },
          { title: "setup s", key: "setupSec", digits: 1 },
          { title: "peak RSS MiB", key: "peakRssMiB" },
          loadgen,
          others,
        ]),
    );
  }
  if (of("rooms").length) parts.push(roomsReport(of("rooms")));
  if (of("restart").length) {
    parts.push(
      "**Restart**: from spawning chorus over a built SQLite store (warm page cache) to its " +
        `listening line, and to the \`welcome\` (${RESTART_HISTORY} messages of history) of a ` +
        "member of one room; the same over an empty store for comparison\n\n" +
        table(of("restart"), [
          { title: "messages kept", key: "messages", ratio: false },
          { title: "store MB", key: "storeMB", ratio: false },
          { title: "build s", key: "buildSec", digits: 1, ratio: false },
          { title: "listening ms", key: "listenMs", ratio: false },
          { title: "welcome ms", key: "welcomeMs", ratio: false },
          { title: "empty store: listening ms", key: "emptyListenMs", ratio: false },
          { title: "welcome ms", key: "emptyWelcomeMs", ratio: false },
          { title: "RSS MiB", key: "rssMiB", ratio: false },
          { title: "empty store RSS MiB", key: "emptyRssMiB", ratio: false },
        ]),
    );
  }
  if (of("sse").length) {
    const vsWebSocket = { server: "chorus", mode: "chat" } as const;
    const fan = of("sse").filter((r) => r.scenario.startsWith("SSE fan-out"));
    const idle = of("sse").filter((r) => r.scenario.startsWith("SSE idle"));
    const ratio = (title: string, key: string, bound?: Column["bound"]): Column => ({
      title,
      key,
      vs: vsWebSocket,
      ...(bound ? { bound } : {}),
    });
    const sseIntro = "**SSE members** (issue #14): `chorus.v1` members over server-sent events " +
      "(`node:http` clients) next to `chorus.v1` over WebSocket in the same run; " +
      '"SSE ÷ WS" columns give the SSE row\'s ratio to the WebSocket row';
    if (fan.length) {
      parts.push(
        `${sseIntro}. Fan-out: one WebSocket \`chorus.v1\` publisher, ${opts.window} ` +
          "messages in flight; deliveries are `message` events\n\n" +
          table(fan, [
            { title: "deliveries/s", key: "deliveriesPerSec" },
            ratio("SSE ÷ WS", "deliveriesPerSec"),
            { title: "p50 ms", key: "p50", digits: 1 },
            ratio("SSE ÷ WS", "p50"),
            { title: "p99 ms", key: "p99", digits: 1 },
            ratio("SSE ÷ WS", "p99"),
            serverCpu,
            { title: "deliveries/CPU-s", key: "deliveriesPerCpuSec" },
            ratio("SSE ÷ WS", "deliveriesPerCpuSec"),
            { title: "RSS MiB", key: "rssMiB" },
            ratio("SSE ÷ WS", "rssMiB"),
            { title: "flood peak RSS MiB", key: "floodPeakRssMiB" },
            { title: "setup s", key: "setupSec", digits: 1 },
            loadgen,
            others,
            { title: "saturated", key: "bound" },
          ]),
      );
    }
    if (idle.length) {
      parts.push(
        `${fan.length ? "**SSE members, idle**" : sseIntro}: memory = (RSS after − RSS before) / ` +
          "members; ready = welcomed\n\n" +
          table(idle, [
            { title: "connected", key: "connections", ratio: false },
            { title: "KiB/conn", key: "kibPerConn", digits: 1 },
            ratio("SSE ÷ WS", "kibPerConn"),
            { title: "of it malloc heap", key: "heapKibPerConn", digits: 1 },
            { title: "other anonymous", key: "anonKibPerConn", digits: 1 },
            { title: "connects/s", key: "connectPerSec" },
            { title: "ready/s", key: "readyPerSec", bound: readyBound },
            ratio("SSE ÷ WS", "readyPerSec", readyBound),
            { title: "server CPU-s per 1k connects", key: "serverCpuSecPer1k", digits: 2 },
            ratio("SSE ÷ WS", "serverCpuSecPer1k"),
            { title: "welcome KiB", key: "welcomeKiB", digits: 1 },
            { title: "presence events/client", key: "presencePerClient" },
            { title: "closed by chorus", key: "closedByServer" },
            { title: "RSS after MiB", key: "rssMiB" },
            loadgen,
            others,
          ]),
      );
    }
  }
  const targets = issue12(results);
  if (targets.length) parts.push(targets.join("\n"));
  const goals = issue13(results);
  if (goals.length) parts.push(goals.join("\n"));
  return parts.join("\n\n");
}

/**
 * Issue #12 ("rooms of any size") targets, `chorus.v1` against chorus raw in the same run:
 * idle in one room, memory per connection ≤ 1.5× and connect rate (until welcomed) ≥ 0.8×;
 * reconnect storm, time until every client is back ≤ 2×.
 */
const ISSUE_12 = [
  {
    what: "idle, one room, memory per connection",
    group: "idle",
    variant: "one room",
    key: "kibPerConn",
    target: 1.5,
    atMost: true,
  },
  {
    what: "idle, one room, connect rate (until welcomed)",
    group: "idle",
    variant: "one room",
    key: "readyPerSec",
    flag: "readyTimeout",
    target: 0.8,
    atMost: false,
  },
  {
    what: "reconnect storm, until every client is back",
    group: "storm",
    key: "backSec",
    flag: "backTimeout",
    target: 2,
    atMost: true,
  },
] as const;

/** One line per target of {@link ISSUE_12} whose two rows this run has. */
function issue12(results: Result[]): string[] {
  const find = (group: Group, mode: Mode, variant?: string) =>
    results.find((r) =>
      r.group === group && r.server === "chorus" && r.mode === mode && r.variant === variant
    );
  const lines = ISSUE_12.flatMap((t) => {
    const chat = find(t.group, "chat", "variant" in t ? t.variant : undefined);
    const raw = find(t.group, "raw");
    const v = chat && numberOf(chat.median, t.key);
    const base = raw && numberOf(raw.median, t.key);
    if (!v || !base) return [];
    // A figure that hit a time limit is a bound: it still decides a target it misses.
    const bounded = "flag" in t && (numberOf(chat.median, t.flag) ?? 0) >= 0.5;
    const ratio = v / base;
    const met = t.atMost ? ratio <= t.target : ratio >= t.target;
    const verdict = bounded && met ? "unknown (timeout)" : met ? "met" : "not met";
    const sign = bounded ? (t.atMost ? "≥ " : "≤ ") : "";
    const goal = `${t.atMost ? "≤" : "≥"} ${t.target}×`;
    return [`- ${t.what}: ${sign}${ratio.toFixed(2)}× chorus raw (target ${goal}): ${verdict}`];
  });
  return lines.length
    ? ["**Issue #12 targets** (`chorus.v1` against chorus raw):", "", ...lines]
    : [];
}

/** The many-rooms case: one row per store and rate step, then the highest rate stored. */
function roomsReport(results: Result[]): string {
  const head = [
    "store",
    "msg/s per member",
    "offered msg/s",
    "sent/s",
    "stored/s",
    "deliveries/s",
    "p50 ms",
    "p99 ms",
    "server CPU",
    "loadgen CPU max",
    "others' CPU",
  ];
  const rows: string[][] = [];
  const list = (m: Metrics, k: string) => (Array.isArray(m[k]) ? m[k] : []) as number[];
  for (const r of results) {
    const m = r.median;
    list(m, "stepRate").forEach((rate, i) => {
      const at = (k: string) => list(m, k)[i] ?? NaN;
      const num = (k: string, digits = 0) => Number.isFinite(at(k)) ? fmt(at(k), digits) : "–";
      rows.push([
        i === 0 ? r.store ?? "–" : "",
        String(rate),
        num("stepOffered"),
        num("stepSent"),
        num("stepStored"),
        num("stepDelivered"),
        num("stepP50", 1),
        num("stepP99", 1),
        pct(at("stepServerCpu")),
        pct(at("stepLoadgenCpuMax")),
        pct(at("stepOthersCpu")),
      ]);
    });
  }
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  const summary = results.map((r) =>
    `- ${r.store}: at most ${fmt(numberOf(r.median, "maxStoredPerSec"))} messages stored/s; ` +
    `kept up (stored ≥ 95% of offered) up to ${
      fmt(numberOf(r.median, "sustainedPerSec"))
    } msg/s offered, p99 there ${fmt(numberOf(r.median, "sustainedP99"), 1)} ms`
  );
  return `**Many rooms**: ${results[0]?.scenario}; each member sends at a fixed rate, stepped ` +
    "up until the server stores less than 90% of what is offered; stored/s from the offsets " +
    "members see; latency from a send to the other member's receipt (worst of the load " +
    "generators)\n\n" +
    [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n") + "\n\n" +
    summary.join("\n");
}

/**
 * Issue #13 ("durable ordered room streams") targets: fan-out of `chorus.v1` on SQLite ≥ 20×
 * ws, raw fan-out on SQLite ≥ 0.95× on memory, and many rooms on SQLite storing ≥ 0.7× what
 * they store on memory (the highest rate of either).
 */
function issue13(results: Result[]): string[] {
  const lines: string[] = [];
  const find = (r: Result, server: ServerKind, mode?: Mode, store?: Store) =>
    results.find((x) =>
      x.scenario === r.scenario && x.server === server &&
      (mode === undefined || x.mode === mode) && (store === undefined || x.store === store)
    );
  const line = (what: string, v: number | null, base: number | null, target: number) => {
    if (!v || !base) return;
    const ratio = v / base;
    lines.push(
      `- ${what}: ${ratio.toFixed(2)}× (target ≥ ${target}×): ${
        ratio >= target ? "met" : "not met"
      }`,
    );
  };
  for (const r of results) {
    if (r.group !== "fanout" || r.server !== "chorus" || r.store !== "sqlite") continue;
    const v = numberOf(r.median, "deliveriesPerSec");
    const ws = find(r, "ws");
    if (r.mode === "chat" && ws) {
      line(
        `${r.scenario}, chorus.v1 on SQLite vs ws`,
        v,
        numberOf(ws.median, "deliveriesPerSec"),
        20,
      );
    }
    const memory = find(r, "chorus", r.mode, "memory");
    if (memory) {
      const mode = r.mode === "chat" ? "chorus.v1" : "raw";
      line(
        `${r.scenario}, ${mode} on SQLite vs memory`,
        v,
        numberOf(memory.median, "deliveriesPerSec"),
        r.mode === "raw" ? 0.95 : 0.95,
      );
    }
  }
  const rooms = (store: Store) => results.find((x) => x.group === "rooms" && x.store === store);
  const sqlite = rooms("sqlite"), memory = rooms("memory");
  if (sqlite && memory) {
    line(
      "many rooms, messages stored/s on SQLite vs memory (highest step)",
      numberOf(sqlite.median, "maxStoredPerSec"),
      numberOf(memory.median, "maxStoredPerSec"),
      0.7,
    );
  }
  return lines.length ? ["**Issue #13 targets**:", "", ...lines] : [];
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
    bin,
    serverCores,
    runtime,
    opts,
    loadgens: [],
  };
  try {
    if (!c.selfStarted) {
      ctx.server = await Server.start(c.server, bin, c.store ? { store: c.store } : undefined);
    }
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
  if (m.maxStoredPerSec !== undefined) {
    return `at most ${v("maxStoredPerSec")} stored/s, kept up to ${v("sustainedPerSec")}/s ` +
      `offered (p99 ${v("sustainedP99", 1)} ms there), ${v("stored")} stored of ${v("sent")} sent`;
  }
  if (m.welcomeMs !== undefined) {
    return `${v("messages")} messages (${v("storeMB")} MB): listening in ${v("listenMs")} ms, ` +
      `welcome in ${v("welcomeMs")} ms; empty store: ${v("emptyListenMs")} ms, ${
        v("emptyWelcomeMs")
      } ms`;
  }
  if (m.backSec !== undefined) {
    const timedOut = numberOf(m, "backTimeout") ? " (timeout)" : "";
    return `${v("back")} of ${v("clients")} back in ${v("backSec", 2)} s${timedOut}, p50 ${
      v("backP50Sec", 2)
    } s, ${v("retries")} retries, ${v("slowTcp")} TCP connects ≥ 1 s, server files peak ${
      v("peakFiles")
    }, setup ${v("setupSec", 1)} s${lg}`;
  }
  if (m.kibPerConn !== undefined) {
    const timedOut = numberOf(m, "readyTimeout") ? " (timeout)" : "";
    return `${v("connections")} connected, ${v("kibPerConn", 1)} KiB/conn, ${
      v("connectPerSec")
    } connects/s, ${v("readyPerSec")} ready/s${timedOut}${lg}`;
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
    cpuProf: opts.cpuProf === null ? null : await Deno.realPath(
      await Deno.mkdir(opts.cpuProf, { recursive: true }).then(() => opts.cpuProf!),
    ),
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
    ...(c.variant ? { variant: c.variant } : {}),
    ...(c.store ? { store: c.store } : {}),
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
