/**
 * What the Redis backplane costs, measured on this machine with real processes (numbers for
 * `docs/scaling.md`):
 *
 * - `fanout`: one sender sends messages into a room of many raw receivers, on one instance
 *   without Redis, one instance with Redis, and two instances on Redis with the receivers
 *   split between them: as fast as it can (deliveries per second at saturation), then paced
 *   at `--rate` messages per second (send-to-receive latency below saturation).
 * - `memory`: the resident memory one instance adds per open connection, and per member of
 *   another instance it tracks (presence spans instances), from `/proc/PID/status`.
 *
 * Run: `deno run -A bench/backplane.ts fanout [--receivers 500] [--messages 2000] [--rate 100]`
 * or `deno run -A bench/backplane.ts memory [--connections 10000]`. Needs `redis-server`.
 * @module
 */
import { parseArgs } from "node:util";
import {
  type Client,
  type MainProcess,
  rawClient,
  type RedisServer,
  startMain,
  startRedis,
  waitFor,
} from "../tests/helpers.ts";

const LIMITS = [
  "--rate-limit",
  "0",
  "--max-connections",
  "1000000",
  "--max-connections-per-ip",
  "1000000",
  // A burst queues the whole round for each receiver at once: not a slow consumer here.
  "--max-buffered-bytes",
  "268435456",
  "--log-level",
  "error",
];

interface Setup {
  name: string;
  instances: MainProcess[];
  /** Process ids of the instances and of Redis, for CPU accounting. */
  pids: number[];
  stop(): Promise<void>;
}

/** CPU time (user + system) a process has used so far, in milliseconds. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in 1/100 s
}

async function totalCpuMs(pids: number[]): Promise<number[]> {
  return await Promise.all(pids.map(cpuMs));
}

async function connections(main: MainProcess): Promise<number> {
  return (await (await fetch(`${main.url}healthz`)).json()).connections;
}

async function stopAll(mains: MainProcess[], redis?: RedisServer): Promise<void> {
  await Promise.all(mains.map(async (m) => {
    m.child.kill("SIGTERM");
    await m.output();
  }));
  await redis?.kill();
}

async function setup(name: string, instances: number, redis: boolean): Promise<Setup> {
  const server = redis ? await startRedis() : undefined;
  const extra = server ? ["--redis-url", server.url] : [];
  const mains: MainProcess[] = [];
  for (let i = 0; i < instances; i++) mains.push(await startMain([...LIMITS, ...extra]));
  const pids = [...mains.map((m) => m.child.pid), ...(server ? [server.pid()!] : [])];
  return { name, instances: mains, pids, stop: () => stopAll(mains, server) };
}

/** Open `n` raw clients to `room`, spread round-robin over the instances, in batches. */
async function openClients(mains: MainProcess[], room: string, n: number): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < n; i += 200) {
    const batch = Array.from(
      { length: Math.min(200, n - i) },
      (_, k) => rawClient(`ws://127.0.0.1:${mains[(i + k) % mains.length].port}${room}`),
    );
    clients.push(...await Promise.all(batch));
  }
  return clients;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/**
 * One round: the sender (on the first instance) sends `messages`, all at once or `rate` per
 * second in 10 ms steps, until every receiver has got them all.
 */
async function burst(
  sender: Client,
  receivers: Client[],
  messages: number,
  size: number,
  rate = Infinity,
): Promise<{ perSecond: number; p50: number; p99: number; max: number }> {
  const latencies: number[] = [];
  let pending = receivers.length * messages;
  let last = 0;
  const done = Promise.withResolvers<void>();
  for (const r of receivers) {
    r.socket.onmessage = (e) => {
      const now = performance.now();
      latencies.push(now - Number((e.data as string).slice(0, 20)));
      last = now;
      if (--pending === 0) done.resolve();
    };
  }
  const pad = "x".repeat(Math.max(0, size - 20));
  const start = performance.now();
  const send = () => sender.send(performance.now().toFixed(6).padStart(20, "0") + pad);
  if (rate === Infinity) {
    for (let i = 0; i < messages; i++) send();
  } else {
    for (let sent = 0; sent < messages;) {
      const due = Math.min(messages, Math.floor(((performance.now() - start) / 1000) * rate));
      for (; sent < due; sent++) send();
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const timer = setTimeout(() => done.reject(new Error(`${pending} deliveries missing`)), 60_000);
  await done.promise;
  clearTimeout(timer);
  latencies.sort((a, b) => a - b);
  return {
    perSecond: Math.round((receivers.length * messages) / ((last - start) / 1000)),
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies[latencies.length - 1],
  };
}

async function fanout(
  receivers: number,
  messages: number,
  size: number,
  rounds: number,
  rate: number,
) {
  console.log(
    `fan-out: 1 sender, ${receivers} raw receivers, ${messages} messages of ${size} bytes ` +
      `per round; saturated: best of ${rounds} rounds; paced: ${rate} messages/s; ` +
      `${navigator.hardwareConcurrency} CPUs`,
  );
  console.log(
    "| setup | saturated deliveries/s | chorus CPU µs/delivery | Redis CPU µs/message " +
      "| paced p50 ms | paced p99 ms | paced max ms |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  const setups: [string, number, boolean][] = [
    ["1 instance, no Redis", 1, false],
    ["1 instance, Redis backplane", 1, true],
    ["2 instances on Redis, receivers split", 2, true],
  ];
  for (const [name, instances, redis] of setups) {
    const s = await setup(name, instances, redis);
    try {
      const all = await openClients(s.instances, "/bench", receivers + 1);
      const [sender, ...rest] = all;
      for (const m of s.instances) {
        await waitFor(async () => (await connections(m)) === receivers + 1, "presence", 30_000);
      }
      sender.socket.onmessage = null;
      await burst(sender, rest, Math.min(200, messages), size); // warm-up
      let best = 0;
      const cpuBefore = await totalCpuMs(s.pids);
      for (let r = 0; r < rounds; r++) {
        best = Math.max(best, (await burst(sender, rest, messages, size)).perSecond);
      }
      const cpu = (await totalCpuMs(s.pids)).map((ms, i) => ms - cpuBefore[i]);
      const chorusMs = cpu.slice(0, instances).reduce((a, b) => a + b, 0);
      const perDelivery = (chorusMs * 1000) / (rounds * messages * receivers);
      const redisPerMessage = redis ? ((cpu[instances] * 1000) / (rounds * messages)) : 0;
      const paced = await burst(sender, rest, Math.min(messages, rate * 5), size, rate);
      const f = (n: number) => n.toFixed(1);
      console.log(
        `| ${name} | ${best} | ${f(perDelivery)} | ${redis ? f(redisPerMessage) : "–"} ` +
          `| ${f(paced.p50)} | ${f(paced.p99)} | ${f(paced.max)} |`,
      );
      await Promise.all(all.map((c) => c.close()));
    } finally {
      await s.stop();
    }
  }
}

async function rssKiB(main: MainProcess): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${main.child.pid}/status`);
  return Number(status.match(/^VmRSS:\s+(\d+) kB$/m)![1]);
}

/** RSS after a GC-friendly pause: let timers settle, then sample a few times and keep the least. */
async function settledRss(main: MainProcess): Promise<number> {
  let least = Infinity;
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 400));
    least = Math.min(least, await rssKiB(main));
  }
  return least;
}

async function memory(n: number) {
  console.log(`memory: ${n} raw connections to one instance; RSS from /proc/PID/status`);
  for (const redis of [false, true]) {
    const s = await setup("", redis ? 2 : 1, redis);
    try {
      const [a, b] = s.instances;
      const before = await settledRss(a);
      const beforeB = b ? await settledRss(b) : 0;
      const clients = await openClients([a], "/mem", n);
      await waitFor(async () => (await connections(a)) === n, "connections", 60_000);
      if (b) await waitFor(async () => (await connections(b)) === n, "presence on B", 60_000);
      const after = await settledRss(a);
      const perConn = ((after - before) * 1024) / n;
      console.log(
        `${redis ? "with Redis" : "no Redis"}: instance RSS ${Math.round(before / 1024)} MiB → ` +
          `${Math.round(after / 1024)} MiB, ${Math.round(perConn)} bytes per connection`,
      );
      if (b) {
        const afterB = await settledRss(b);
        console.log(
          `  the other instance, tracking those ${n} members: ` +
            `${Math.round(((afterB - beforeB) * 1024) / n)} bytes per remote member`,
        );
      }
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      await s.stop();
    }
  }
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      receivers: { type: "string", default: "500" },
      messages: { type: "string", default: "2000" },
      size: { type: "string", default: "64" },
      rounds: { type: "string", default: "3" },
      rate: { type: "string", default: "100" },
      connections: { type: "string", default: "10000" },
    },
  });
  const mode = positionals[0] ?? "fanout";
  if (mode === "fanout") {
    await fanout(
      Number(values.receivers),
      Number(values.messages),
      Number(values.size),
      Number(values.rounds),
      Number(values.rate),
    );
  } else if (mode === "memory") {
    await memory(Number(values.connections));
  } else {
    console.error(`bench/backplane.ts: unknown mode ${mode} (fanout or memory)`);
    Deno.exit(2);
  }
}
