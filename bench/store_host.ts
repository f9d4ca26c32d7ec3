/**
 * What the store host of `--workers` costs per message (numbers for `docs/performance.md`): a
 * {@link RemoteStream} appends chat messages to a {@link StoreHost} over a memory
 * {@link LocalStream}, and counts them as the host broadcasts them back; messages per second
 * from the first append to the last frame heard, with posts batched per turn (the default)
 * and one post per message. `--per-turn` is how many appends a turn of the event loop makes
 * (a hub appends once per WebSocket message, and several messages may land in one turn).
 * `--thread worker` puts the remote in a worker thread, as in `--workers`; `same` keeps both
 * ends on one thread (the cost of cloning and posting alone).
 *
 * Run: `deno run -A bench/store_host.ts [--messages 100000] [--per-turn 1,10,100]
 * [--thread worker|same] [--runs 3]`.
 * @module
 */
/// <reference lib="deno.worker" />
import { setImmediate } from "node:timers";
import { parseArgs } from "node:util";
import { LocalStream } from "../src/local_stream.ts";
import { createLogger } from "../src/log.ts";
import { MemoryBackend } from "../src/memory_store.ts";
import { Metrics } from "../src/metrics.ts";
import type { MessageEvent as ChatMessage } from "../src/protocol.ts";
import { RemoteStream, StoreHost } from "../src/store_host.ts";

/** What the main thread tells the remote's thread: one run. */
interface Run {
  port: MessagePort;
  messages: number;
  perTurn: number;
  batch: boolean;
}

const TEXT = "x".repeat(100);

/** Append `messages` in turns of `perTurn`, resolve with the ms until every one came back. */
async function sendAndCount(run: Omit<Run, "port">, remote: RemoteStream): Promise<number> {
  let heard = 0;
  const all = new Promise<void>((resolve) => {
    remote.listen(() => {
      if (++heard === run.messages) resolve();
    });
  });
  const start = performance.now();
  for (let sent = 0; sent < run.messages;) {
    for (let k = 0; k < run.perTurn && sent < run.messages; k++, sent++) {
      const event: ChatMessage = {
        type: "message",
        id: `m${sent}`,
        from: { id: "u1", name: "sender" },
        text: TEXT,
        ts: Date.now(),
      };
      remote.append(`/room${sent % 10}`, event);
    }
    await new Promise((r) => setImmediate(r));
  }
  await all;
  return performance.now() - start;
}

/** The remote's side, in whichever thread runs it. */
async function remoteSide(run: Run): Promise<number> {
  const remote = new RemoteStream(run.port, { batch: run.batch });
  const ms = await sendAndCount(run, remote);
  await remote.close();
  return ms;
}

if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  self.onmessage = async (e: MessageEvent<Run>) => self.postMessage(await remoteSide(e.data));
} else if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      messages: { type: "string", default: "100000" },
      "per-turn": { type: "string", default: "1,10,100" },
      thread: { type: "string", default: "worker" },
      runs: { type: "string", default: "3" },
    },
  });
  const messages = Number(values.messages);
  const log = createLogger({ level: "error", format: "text" });
  console.log(`thread=${values.thread} messages=${messages} (median of ${values.runs} runs)`);
  console.log("per turn | batched msg/s | unbatched msg/s");
  for (const perTurn of values["per-turn"].split(",").map(Number)) {
    const rates: Record<string, number> = {};
    for (const batch of [true, false]) {
      const samples: number[] = [];
      for (let r = 0; r < Number(values.runs); r++) {
        const local = new LocalStream({
          backend: new MemoryBackend({ retainMessages: 1000, retainMs: 3600_000, maxBytes: 1e8 }),
        });
        const host = new StoreHost(local, log, new Metrics().row, { batch });
        const { port1, port2 } = new MessageChannel();
        host.attach(port1);
        const run = { messages, perTurn, batch };
        let ms: number;
        if (values.thread === "same") ms = await remoteSide({ ...run, port: port2 });
        else {
          const worker = new Worker(import.meta.url, { type: "module" });
          ms = await new Promise<number>((resolve) => {
            worker.onmessage = (e: MessageEvent<number>) => resolve(e.data);
            worker.postMessage({ ...run, port: port2 }, [port2]);
          });
          worker.terminate();
        }
        await host.close();
        samples.push(messages / (ms / 1000));
      }
      rates[String(batch)] = samples.sort((a, b) => a - b)[samples.length >> 1]!;
    }
    const f = (n: number) => Math.round(n).toLocaleString("en").padStart(13);
    console.log(`${String(perTurn).padStart(8)} | ${f(rates["true"]!)} | ${f(rates["false"]!)}`);
  }
}
