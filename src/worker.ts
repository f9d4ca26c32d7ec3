/**
 * The entry point of one `--workers` thread: it builds a server like the single-threaded one,
 * shares the port with its siblings (`reusePort`) and joins their hub over the bus. It talks
 * to the main thread (`src/cluster.ts`) in {@link ToWorker} and {@link FromWorker} messages.
 * @module
 */
/// <reference lib="deno.worker" />
import { createApp, redisBackplane } from "./app.ts";
import { BroadcastChannelBus } from "./bus.ts";
import type { Config } from "./config.ts";
import { createLogger } from "./log.ts";
import { RemoteStream } from "./store_host.ts";

/** Messages from the main thread. */
export type ToWorker =
  | {
    type: "start";
    config: Config;
    /**
     * Its row in `metrics` and in `limiter`; a replacement for a crashed worker gets the same.
     */
    index: number;
    /** The port to share; 0 only for the first worker, which picks it. */
    port: number;
    metrics: Float64Array;
    limiter: Int32Array;
    busName: string;
    tls?: { cert: string; key: string } | undefined;
    /** The `--jwt-public-key` PEM, read once by the main thread. */
    jwtPublicKeyPem?: string | undefined;
    /**
     * This worker's end of its channel to the main thread's store host; none with
     * `--redis-url`, whose backplane is the store.
     */
    store?: MessagePort | undefined;
  }
  | { type: "stop" };

/** Messages to the main thread. */
export type FromWorker =
  | {
    type: "listening";
    hostname: string;
    port: number;
    /** The hub's id on the bus, which the main thread says `bye` for if this worker crashes. */
    node: string;
  }
  | { type: "failed"; message: string }
  | { type: "stopped" };

function post(message: FromWorker): void {
  self.postMessage(message);
}

let stop: (() => Promise<void>) | undefined;

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  if (m.type === "stop") {
    await stop?.();
    post({ type: "stopped" });
    return;
  }
  const { config } = m;
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  // With --redis-url each worker is an instance of its own on the backplane, which already
  // carries everything between them: no BroadcastChannel too, or workers would hear it twice.
  const bus = await redisBackplane(config, log);
  const app = createApp(config, {
    log,
    jwtPublicKeyPem: m.jwtPublicKeyPem,
    bus,
    store: m.store && new RemoteStream(m.store),
    shared: {
      metrics: m.metrics,
      index: m.index,
      limiter: m.limiter,
      bus: bus ? undefined : new BroadcastChannelBus(m.busName),
      // Relayed even with Redis: the workers of one process share its port either way.
      relay: `${m.busName}:sessions`,
    },
  });
  try {
    const server = Deno.serve({
      port: m.port,
      hostname: config.hostname,
      reusePort: true,
      ...m.tls,
      onListen: ({ hostname, port }) =>
        post({ type: "listening", hostname, port, node: app.hub.node }),
    }, app.handler);
    stop = async () => {
      await app.shutdown();
      await server.shutdown();
    };
  } catch (err) {
    if (!(err instanceof Error)) throw err;
    await app.hub.dispose();
    post({ type: "failed", message: err.message.split("\n")[0]! });
  }
};
