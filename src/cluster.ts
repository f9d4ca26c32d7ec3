/**
 * `--workers N`: the main thread starts N workers (`src/worker.ts`) that listen on the same
 * port with `SO_REUSEPORT`, so the kernel spreads connections over them, and whose hubs form
 * one over a `BroadcastChannel`. Metrics and connection limits live in shared memory.
 * @module
 */
import type { Config } from "./config.ts";
import { limiterTable } from "./limiter.ts";
import { metricsTable } from "./metrics.ts";
import type { FromWorker, ToWorker } from "./worker.ts";

/** A worker could not listen; `main.ts` reports it like a failed listen of its own. */
export class ListenError extends Error {
  override name = "ListenError";
}

/** A running set of workers. */
export interface Cluster {
  hostname: string;
  port: number;
  /** Close every socket in every worker, then stop them all. */
  stop(): Promise<void>;
}

function next(worker: Worker): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<FromWorker>) => resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new ListenError(e.message));
    };
  });
}

/**
 * Start `config.workers` workers one after the other (the first picks the port when it is
 * 0); rejects with the first worker's error if one cannot listen. `jwtPublicKeyPem` is the
 * already checked `--jwt-public-key` file, handed to every worker.
 */
export async function startCluster(
  config: Config,
  tls: { cert: string; key: string } | undefined,
  jwtPublicKeyPem?: string,
): Promise<Cluster> {
  const metrics = metricsTable(config.workers);
  const limiter = limiterTable();
  const busName = `chorus-${crypto.randomUUID()}`;
  const workers: Worker[] = [];
  let port = config.port;
  let hostname = config.hostname;
  try {
    for (let index = 0; index < config.workers; index++) {
      const worker = new Worker(new URL("./worker.ts", import.meta.url).href, {
        type: "module",
        name: `chorus-worker-${index}`,
      });
      workers.push(worker);
      const reply = next(worker);
      const start: ToWorker = {
        type: "start",
        config,
        index,
        port,
        metrics,
        limiter,
        busName,
        tls,
        jwtPublicKeyPem,
      };
      worker.postMessage(start);
      const m = await reply;
      if (m.type !== "listening") {
        throw new ListenError(m.type === "failed" ? m.message : `unexpected ${m.type}`);
      }
      ({ port, hostname } = m);
    }
  } catch (err) {
    for (const w of workers) w.terminate();
    throw err;
  }
  return {
    hostname,
    port,
    async stop() {
      await Promise.all(workers.map(async (w) => {
        const done = next(w);
        w.postMessage({ type: "stop" } satisfies ToWorker);
        await done;
        w.terminate();
      }));
    },
  };
}
