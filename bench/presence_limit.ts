/**
 * What full presence costs, to choose `--presence-limit`: N `chorus.v1` clients join one room at
 * once (a reconnect storm), first with full presence (a limit above N), then with counts (limit
 * 0), then as raw clients, each against a fresh chorus process. Reports the time until every
 * client has its `welcome` (raw: its `open`), chorus' CPU time and peak RSS, and the bytes the
 * clients received, as a Markdown table.
 *
 *   deno run -A bench/presence_limit.ts [SIZES]     e.g. 100,300,1000,3000 (the default)
 *
 * The clients live in this process, so on a small machine it limits the times of large N; the
 * server's CPU and the bytes are what to compare.
 * @module
 */
const ROOT = new URL("..", import.meta.url).pathname;
const sizes = (Deno.args[0] ?? "100,300,1000,3000").split(",").map(Number);
type Mode = "full" | "count" | "raw";

interface Row {
  n: number;
  mode: Mode;
  welcomesMs: number;
  cpuMs: number;
  rssMiB: number;
  receivedMiB: number;
}

/** User plus system CPU time of a process, in ms. */
async function cpuMs(pid: number): Promise<number> {
  const fields = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(status.match(/VmHWM:\s+(\d+)/)![1]) / 1024;
}

/** Resolves once no frame has arrived for `quietMs` (the presence traffic has settled). */
async function settled(count: () => number, quietMs = 500): Promise<void> {
  let last = -1;
  while (count() !== last) {
    last = count();
    await new Promise((resolve) => setTimeout(resolve, quietMs));
  }
}

async function storm(n: number, mode: Mode): Promise<Row> {
  const limit = mode === "full" ? n : 0;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "--allow-net", "--allow-env", "--allow-read", `${ROOT}main.ts`],
      ...["--port", "0", "--hostname", "127.0.0.1", "--log-level", "error"],
      ...["--presence-limit", String(limit), "--max-connections", "100000"],
      ...["--max-connections-per-ip", "100000"],
    ],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const line = (await reader.read()).value ?? "";
  const port = Number(line.match(/:(\d+)\//)?.[1]);
  if (!port) throw new Error(`no listening line: ${line}`);
  let bytes = 0;
  const sockets: WebSocket[] = [];
  const cpu0 = await cpuMs(child.pid);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: n }, () =>
    new Promise<void>((resolve, reject) => {
      const url = `ws://127.0.0.1:${port}/storm`;
      const ws = mode === "raw" ? new WebSocket(url) : new WebSocket(url, "chorus.v1");
      sockets.push(ws);
      ws.onerror = () => reject(new Error(`a ${mode} client failed to connect`));
      if (mode === "raw") ws.onopen = () => resolve();
      ws.onmessage = (e) => {
        bytes += (e.data as string).length;
        resolve(); // the first frame of a chat client is its welcome
      };
    })));
  const welcomesMs = performance.now() - t0;
  await settled(() => bytes);
  const row: Row = {
    n,
    mode,
    welcomesMs: Math.round(welcomesMs),
    cpuMs: (await cpuMs(child.pid)) - cpu0,
    rssMiB: Math.round(await peakRssMiB(child.pid)),
    receivedMiB: Math.round(bytes / 2 ** 20 * 10) / 10,
  };
  for (const ws of sockets) ws.close();
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  return row;
}

const rows: Row[] = [];
for (const n of sizes) {
  for (const mode of ["full", "count", "raw"] as const) {
    const row = await storm(n, mode);
    console.error(JSON.stringify(row));
    rows.push(row);
  }
}
console.log(
  "| members | presence | all welcomed (ms) | chorus CPU (ms) | peak RSS (MiB) | received (MiB) |",
);
console.log("|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(
    `| ${r.n} | ${r.mode} | ${r.welcomesMs} | ${r.cpuMs} | ${r.rssMiB} | ${r.receivedMiB} |`,
  );
}
