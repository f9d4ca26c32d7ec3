/**
 * `--workers N`: the main thread starts N workers (`src/worker.ts`) that listen on the same
 * port with `SO_REUSEPORT`, so the kernel spreads connections over them, and whose hubs form
 * one over a `BroadcastChannel`, which carries presence only. Messages go through the one
 * stream store the main thread owns and serves to every worker over a `MessagePort` of its own
 * (`src/store_host.ts`): one sequencer, so one order per room on every worker. With
 * `--redis-url` the backplane is the store instead, and there is no host. Metrics and
 * connection limits live in shared memory; the metrics table has a row for the host after the
 * workers' rows.
 *
 * A worker that crashes once the cluster runs is logged at error level and cleaned up after
 * (its members leave on the other workers, its connection-limit counts and connection gauges
 * are given back), then replaced by a new worker on the same port. A worker that keeps
 * crashing ({@link MAX_RESTARTS} within {@link RESTART_WINDOW_MS}) stops the whole cluster,
 * and the process exits with {@link CRASH_LOOP_EXIT_CODE} so that its supervisor can act.
 * @module
 */
import type { BusMessage } from "./bus.ts";
import type { Config } from "./config.ts";
import { limiterTable, releaseWorker } from "./limiter.ts";
import { createLogger, type Logger } from "./log.ts";
import { clearGauges, Metrics, metricsTable } from "./metrics.ts";
import { openStore } from "./open_store.ts";
import { StoreHost } from "./store_host.ts";
import type { FromWorker, ToWorker } from "./worker.ts";

/** A worker could not listen; `main.ts` reports it like a failed listen of its own. */
export class ListenError extends Error {
  override name = "ListenError";
}

/**
 * Restarts of one worker allowed within {@link RESTART_WINDOW_MS}; one more crash is a crash
 * loop, which a new thread will not fix (a bad config, a bug hit by every client).
 */
export const MAX_RESTARTS = 5;

/** The window over which {@link MAX_RESTARTS} counts one worker's crashes. */
export const RESTART_WINDOW_MS = 60_000;

/**
 * How long {@link Cluster.stop} waits for every worker to close its sockets and answer; then
 * it terminates those that have not. Longer than a hub's own 2 s wait for close handshakes, so
 * a healthy worker always finishes first.
 */
export const STOP_TIMEOUT_MS = 5_000;

/** Exit status after a crash loop: not 0, so that systemd's `Restart=on-failure` restarts. */
export const CRASH_LOOP_EXIT_CODE = 1;

/** A running set of workers. */
export interface Cluster {
  hostname: string;
  port: number;
  /**
   * Close every socket in every worker, then stop them all. Never waits for a dead worker,
   * nor longer than {@link ClusterOptions.stopTimeoutMs} for a live one.
   */
  stop(): Promise<void>;
}

/** How {@link startCluster} runs its workers; production uses the defaults. */
export interface ClusterOptions {
  /** The worker module: `./worker.ts` in production; tests pass one that can crash. */
  workerUrl?: string | URL;
  /** Where the main thread logs crashes; by default a logger built from the config. */
  log?: Logger;
  /** See {@link MAX_RESTARTS}. */
  maxRestarts?: number;
  /** See {@link RESTART_WINDOW_MS}. */
  restartWindowMs?: number;
  /** See {@link STOP_TIMEOUT_MS}. */
  stopTimeoutMs?: number | undefined;
  /**
   * Called once a crash loop has stopped every worker; by default the process exits with
   * {@link CRASH_LOOP_EXIT_CODE}, since it no longer serves anything.
   */
  onGiveUp?: () => void;
}

type Listening = Extract<FromWorker, { type: "listening" }>;

/** One thread in a worker's place: the first, or a replacement after a crash. */
interface Run {
  worker: Worker;
  /** The main thread's end of its channel to the store host; none with `--redis-url`. */
  store?: MessagePort | undefined;
  /** Its hub's id on the bus, once it listens. */
  node?: string;
  /** Resolved when the thread is gone: it stopped, crashed, failed or was terminated. */
  exited: Promise<void>;
  /** Fail the start of a thread terminated before it listened. */
  fail(err: Error): void;
  markExited(): void;
}

/** A worker's place in the cluster: its rows in the shared tables and its recent crashes. */
interface Slot {
  index: number;
  run?: Run | undefined;
  /** When its threads crashed, within the restart window. */
  crashes: number[];
}

function describe(e: ErrorEvent): string {
  return e.filename ? `${e.message} (${e.filename}:${e.lineno}:${e.colno})` : e.message;
}

/**
 * Start `config.workers` workers one after the other (the first picks the port when it is
 * 0); rejects with the first worker's error if one cannot listen. `jwtPublicKeyPem` is the
 * already checked `--jwt-public-key` file, handed to every worker. The stream store is opened
 * first, so a data directory that cannot be used throws its `StoreOpenError` before any
 * worker starts.
 */
export async function startCluster(
  config: Config,
  tls: { cert: string; key: string } | undefined,
  jwtPublicKeyPem?: string,
  options: ClusterOptions = {},
): Promise<Cluster> {
  const log = options.log ?? createLogger({ level: config.logLevel, format: config.logFormat });
  const workerUrl = new URL(options.workerUrl ?? new URL("./worker.ts", import.meta.url)).href;
  const maxRestarts = options.maxRestarts ?? MAX_RESTARTS;
  const restartWindowMs = options.restartWindowMs ?? RESTART_WINDOW_MS;
  const stopTimeoutMs = options.stopTimeoutMs ?? STOP_TIMEOUT_MS;
  const onGiveUp = options.onGiveUp ?? (() => Deno.exit(CRASH_LOOP_EXIT_CODE));
  // Without Redis the main thread keeps the store, and counts its write errors in a row of
  // its own, after the workers' rows (which keep their indexes, for clearGauges and limits).
  const hosted = config.redisUrl === undefined;
  const metrics = metricsTable(config.workers + (hosted ? 1 : 0));
  const hostRow = new Metrics(metrics, config.workers).row;
  const host = hosted ? new StoreHost(openStore(config, log, hostRow), log, hostRow) : undefined;
  const limiter = limiterTable(config.workers);
  const busName = `chorus-${crypto.randomUUID()}`;
  /** The workers' bus, opened by the main thread only to say `bye` for a crashed worker. */
  let bus: BroadcastChannel | undefined;
  const slots: Slot[] = Array.from({ length: config.workers }, (_, index) => ({
    index,
    crashes: [],
  }));
  let port = config.port;
  let hostname = config.hostname;
  let stopping: Promise<void> | undefined;

  /** The thread is gone: make sure of it, and settle whatever waits for it. */
  const gone = (slot: Slot, run: Run) => {
    run.worker.terminate();
    run.fail(new ListenError("the worker stopped before it listened"));
    run.markExited();
    if (run.store) host?.detach(run.store);
    if (slot.run === run) slot.run = undefined;
  };

  const spawn = (slot: Slot): Promise<Listening> => {
    const worker = new Worker(workerUrl, { type: "module", name: `chorus-worker-${slot.index}` });
    // Attached before the worker starts, so that it hears every frame stored from then on.
    const channel = host ? new MessageChannel() : undefined;
    if (channel) host!.attach(channel.port1);
    return new Promise<Listening>((resolve, reject) => {
      let markExited!: () => void;
      const run: Run = {
        worker,
        store: channel?.port1,
        exited: new Promise<void>((r) => markExited = r),
        fail: reject,
        markExited: () => markExited(),
      };
      slot.run = run;
      worker.onmessage = (e: MessageEvent<FromWorker>) => {
        const m = e.data;
        if (m.type === "listening") {
          run.node = m.node;
          resolve(m);
        } else if (m.type === "failed") {
          reject(new ListenError(m.message));
          gone(slot, run);
        } else {
          gone(slot, run); // stopped
        }
      };
      worker.onerror = (e) => {
        // Handled here: without this, the error would also end the main thread.
        e.preventDefault();
        if (run.node === undefined) {
          reject(new ListenError(describe(e)));
          gone(slot, run);
        } else {
          crashed(slot, run, describe(e));
        }
      };
      const start: ToWorker = {
        type: "start",
        config,
        index: slot.index,
        port,
        metrics,
        limiter,
        busName,
        tls,
        jwtPublicKeyPem,
        store: channel?.port2,
      };
      worker.postMessage(start, channel ? [channel.port2] : []);
    });
  };

  /** Clean up after a worker that died while listening, then replace it unless stopping. */
  const crashed = (slot: Slot, run: Run, error: string) => {
    gone(slot, run);
    const connections = releaseWorker(limiter, slot.index);
    clearGauges(metrics, slot.index);
    // With --redis-url the workers are not on this channel: the other instances' heartbeat
    // expiry (src/redis_bus.ts) makes the dead worker's members leave instead.
    if (config.redisUrl === undefined) {
      bus ??= new BroadcastChannel(busName);
      bus.postMessage({ t: "bye", node: run.node! } satisfies BusMessage);
    }
    log.error("worker crashed", { worker: slot.index, node: run.node, connections, error });
    if (stopping) return;
    const now = Date.now();
    slot.crashes = slot.crashes.filter((t) => now - t < restartWindowMs);
    slot.crashes.push(now);
    if (slot.crashes.length > maxRestarts) {
      log.error("worker crash loop, stopping", {
        worker: slot.index,
        crashes: slot.crashes.length,
        windowMs: restartWindowMs,
      });
      void stop().then(onGiveUp);
      return;
    }
    spawn(slot).then(
      (m) => log.info("worker restarted", { worker: slot.index, node: m.node }),
      (err: Error) => {
        if (stopping) return;
        log.error("worker could not restart, stopping", { worker: slot.index, error: err.message });
        void stop().then(onGiveUp);
      },
    );
  };

  /** Ask one worker to stop; a thread that does not listen (yet) has nothing to close. */
  const stopSlot = (slot: Slot): Promise<void> => {
    const run = slot.run;
    if (!run) return Promise.resolve();
    if (run.node === undefined) {
      gone(slot, run);
      return Promise.resolve();
    }
    run.worker.postMessage({ type: "stop" } satisfies ToWorker);
    return run.exited;
  };

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), stopTimeoutMs);
      });
      const all = Promise.all(slots.map((s) => stopSlot(s))).then(() => true);
      const finished = await Promise.race([all, timeout]);
      clearTimeout(timer);
      const late = slots.filter((s) => s.run !== undefined);
      if (!finished) {
        log.error("workers did not stop in time, terminated", {
          workers: late.map((s) => s.index).join(","),
          timeoutMs: stopTimeoutMs,
        });
      }
      for (const s of late) gone(s, s.run!);
      bus?.close();
      // Last: the workers' appends have reached it (each one's store waits for that when it
      // closes), and whatever is still pending is stored now.
      await host?.close();
    })();
    return stopping;
  };

  try {
    for (const slot of slots) ({ port, hostname } = await spawn(slot));
  } catch (err) {
    stopping = Promise.resolve();
    for (const slot of slots) if (slot.run) gone(slot, slot.run);
    bus?.close();
    await host?.close();
    throw err;
  }
  return { hostname, port, stop };
}
