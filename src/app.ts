/**
 * One chorus server's parts built from its config: counters, hub and request handler. `main.ts`,
 * each worker of `--workers` and the tests build servers this way, so tests run what
 * production runs.
 * @module
 */
import { type Admin, createAdmin } from "./admin.ts";
import { createApi } from "./api.ts";
import { createVerifier, type Verifier } from "./auth.ts";
import type { Bus } from "./bus.ts";
import { checkHooks, type Config, ConfigError } from "./config.ts";
import { connectHookOf } from "./connect_hook.ts";
import { Hub, newNodeId } from "./hub.ts";
import { ConnectionLimiter } from "./limiter.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { Moderation } from "./moderation.ts";
import { openStore } from "./open_store.ts";
import { createHandler, type Handler } from "./server.ts";
import { EVERY_ROOM, type Occupancy, ownedRooms, RoomEvents } from "./room_events.ts";
import { signingKey } from "./signing.ts";
import { createSse } from "./sse.ts";
import type { StreamStore } from "./store.ts";
import { WEBHOOK_TIMINGS, Webhooks, type WebhookTimings } from "./webhooks.ts";

/** The parts of one server; `Deno.serve` takes `handler`. */
export interface App {
  hub: Hub;
  handler: Handler;
  /**
   * Close every socket and event stream with 1001 `server shutting down` (see `src/close.ts`),
   * waiting up to 2 s for the close handshakes and, meanwhile, for the queued webhooks to be
   * delivered ({@link WebhookTimings.shutdownMs}); then dispose of the hub. New upgrades get 503
   * from the first moment.
   */
  shutdown(): Promise<void>;
}

/** State a worker shares with the other workers of its process. */
export interface Shared {
  /** The metrics table of {@link metricsTable}, one row per worker. */
  metrics: Float64Array;
  /** This worker's row. */
  index: number;
  /** The connection counts of {@link limiterTable}, with a row for each worker. */
  limiter: Int32Array;
  /** The bus between the workers' hubs; none when each worker is on the Redis backplane. */
  bus?: Bus | undefined;
  /** The `BroadcastChannel` the workers relay event-stream POSTs over (`src/sessions.ts`). */
  relay?: string | undefined;
}

/** Extra wiring that does not come from flags. */
export interface AppOptions {
  log: Logger;
  /** Clock for history expiry and timestamps; tests inject one. */
  now?: (() => number) | undefined;
  /** Set in a worker of `--workers`. */
  shared?: Shared;
  /** The PEM text of the `--jwt-public-key` file, which `main.ts` reads and checks. */
  jwtPublicKeyPem?: string | undefined;
  /** Builds the hub's bus to other instances (see {@link redisBackplane}); wins over `shared.bus`. */
  bus?: BusFactory | undefined;
  /** Path prefix to serve everything under, e.g. `/ws` (see {@link normaliseBasePath}). */
  basePath?: string | undefined;
  /**
   * The stream store, when it is not the one `config.store` names in this process: a worker's
   * view of the main thread's store (`src/store_host.ts`). The hub closes it.
   */
  store?: StreamStore | undefined;
  /** Overrides of the webhook timings ({@link WEBHOOK_TIMINGS}), so tests need not wait minutes. */
  webhookTimings?: Partial<WebhookTimings> | undefined;
}

/**
 * A base path as the handler wants it: `""` for none (also for `"/"`), else `/a/b` with no
 * trailing slash. Segments are letters, digits and `-._~`, never `.` or `..`, so the prefix
 * is safe to put in the page's HTML. Throws {@link ConfigError} for anything else.
 */
export function normaliseBasePath(raw: string): string {
  const path = raw.replace(/\/+$/, "");
  if (path === "") return "";
  const segments = path.split("/").slice(1);
  if (
    !path.startsWith("/") ||
    !segments.every((seg) => /^[A-Za-z0-9._~-]+$/.test(seg) && seg !== "." && seg !== "..")
  ) {
    throw new ConfigError(
      `basePath: expected a path like /ws (letters, digits and -._~ per segment), got "${raw}"`,
    );
  }
  return path;
}

/** Makes the bus of the hub with id `node`, counting into the hub's metrics. */
export type BusFactory = (metrics: Metrics, node: string) => Bus;

/**
 * The Redis backplane `--redis-url` asks for, or undefined without one. The Redis client is
 * imported only then, so a single instance never loads it.
 */
export async function redisBackplane(
  config: Config,
  log: Logger,
): Promise<BusFactory | undefined> {
  const url = config.redisUrl;
  if (url === undefined) return undefined;
  const { RedisBus } = await import("./redis_bus.ts");
  return (metrics, node) =>
    new RedisBus({
      url,
      node,
      retainMessages: config.retainMessages,
      retainMs: config.retainDays * 24 * 3600_000,
      log,
      metrics,
    });
}

/**
 * Build the hub and handler of one server from its config. Opening the SQLite store checks
 * the data directory: it throws `StoreOpenError` naming the path when it cannot be used.
 */
export function createApp(
  config: Config,
  { log, now, shared, jwtPublicKeyPem, bus, basePath = "", store, webhookTimings }: AppOptions,
): App {
  // Checked first: a bad base path must not leave a store (and its directory lock) open.
  const base = normaliseBasePath(basePath);
  const metrics = new Metrics(shared?.metrics, shared?.index);
  // Before the store opens, like the base path: a hook without its secret is refused first.
  checkHooks(config);
  // One key signs every request to the application.
  const key = config.webhookSecret === undefined ? undefined : signingKey(config.webhookSecret);
  const moderation = key && createModeration(config, key, metrics, log);
  const timings = { ...WEBHOOK_TIMINGS, ...webhookTimings };
  const webhooks = key && createWebhooks(config, key, metrics, log, timings);
  const node = newNodeId();
  const hubBus = bus?.(metrics, node) ?? shared?.bus;
  const roomEvents = webhooks && new RoomEvents({
    sink: webhooks,
    occupancy: occupancyOf(hubBus, shared, config),
    vacateDelayMs: config.webhookVacateDelay * 1000,
    log,
    now,
    warnIntervalMs: timings.warnIntervalMs,
  });
  // Built after the hub, which hands it what other hubs publish for it.
  let admin: Admin | undefined = undefined;
  const hub = new Hub({
    node,
    history: config.history,
    store: store ?? (isStreamStore(hubBus) ? hubBus : openStore(config, log, metrics.row)),
    maxBufferedBytes: config.maxBufferedBytes,
    presenceLimit: config.presenceLimit,
    presenceIntervalMs: config.presenceInterval * 1000,
    limiter: new ConnectionLimiter(
      config.maxConnections,
      config.maxConnectionsPerIp,
      shared?.limiter,
      shared?.index,
    ),
    metrics,
    bus: hubBus,
    onDrop: (member, reason) =>
      log.warn("connection closed by policy", {
        reason,
        id: member.id,
        ip: member.ip,
        room: member.room,
      }),
    now,
    moderation,
    observer: roomEvents,
    onBus: (m) => admin?.receive(m),
  });
  admin = config.apiKey === undefined ? undefined : createAdmin({
    hub,
    log,
    bus: hubBus,
    label: nodeLabel(node, shared?.index, bus !== undefined),
    maxMessageBytes: config.maxMessageBytes,
  });
  const api = config.apiKey === undefined ? undefined : createApi({
    apiKey: config.apiKey,
    maxMessageBytes: config.maxMessageBytes,
    hub,
    log,
    admin: admin?.handler,
  });
  const verify = createConnectionVerifier(config, jwtPublicKeyPem);
  const sse = createSse({ config, hub, relayChannel: shared?.relay });
  const handler = createHandler({
    config,
    hub,
    log,
    verify,
    connectHook: key && connectHookOf(config, key, log, metrics.row),
    api,
    basePath: base,
    sse,
  });
  return {
    hub,
    handler,
    async shutdown() {
      const deadline = Date.now() + timings.shutdownMs;
      // While the close handshakes go on, rooms emptied (here, or on other workers stopping
      // too) are vacated at once and webhooks go out without waiting for their batch.
      roomEvents?.hurry();
      webhooks?.hurry();
      admin?.close();
      await hub.closeAll();
      await roomEvents?.close(deadline);
      await webhooks?.drain(deadline);
      sse.close();
      await hub.dispose();
    },
  };
}

/** The moderation hook `--publish-hook-url` asks for, or undefined without one. */
function createModeration(
  config: Config,
  key: Promise<CryptoKey>,
  metrics: Metrics,
  log: Logger,
): Moderation | undefined {
  const url = config.publishHookUrl;
  if (url === undefined) return undefined;
  return new Moderation({
    url,
    key,
    timeoutMs: config.publishHookTimeout * 1000,
    failure: config.publishHookFailure,
    queue: config.publishHookQueue,
    row: metrics.row,
    log,
  });
}

/** The webhooks `--webhook-url` asks for, or undefined without one. */
function createWebhooks(
  config: Config,
  key: Promise<CryptoKey>,
  metrics: Metrics,
  log: Logger,
  timings: WebhookTimings,
): Webhooks | undefined {
  const url = config.webhookUrl;
  if (url === undefined) return undefined;
  return new Webhooks({
    url,
    key,
    types: config.webhookEvents,
    timeoutMs: config.webhookTimeout * 1000,
    limit: config.webhookQueue,
    row: metrics.row,
    log,
    timings,
  });
}

/**
 * Which hub of a cluster sends a room's `room.occupied` and `room.vacated`: the winner of a
 * claim in Redis with `--redis-url`, the room's owner among `--workers`, else this one.
 */
function occupancyOf(bus: Bus | undefined, shared: Shared | undefined, config: Config): Occupancy {
  if (bus !== undefined && "claimRoom" in bus) return bus as Bus & Occupancy;
  if (shared?.bus !== undefined) return ownedRooms(shared.index, config.workers);
  return EVERY_ROOM;
}

/**
 * How the operator's live view names a node: a worker of `--workers` by its number, an
 * instance (one per process, or per worker with `--redis-url`) by its hub id.
 */
function nodeLabel(node: string, worker: number | undefined, redis: boolean): string {
  if (!redis && worker !== undefined) return `worker ${worker + 1}`;
  return worker === undefined ? `instance ${node}` : `instance ${node} (worker ${worker + 1})`;
}

/** Whether a bus also keeps rooms' streams (the Redis backplane does). */
function isStreamStore(bus: Bus | undefined): bus is Bus & StreamStore {
  return bus !== undefined && "append" in bus && "read" in bus;
}

/**
 * The token check `--jwt-secret` or `--jwt-public-key` asks for (a library user passes the
 * key's PEM text alone); none when neither is set.
 */
function createConnectionVerifier(
  config: Config,
  jwtPublicKeyPem: string | undefined,
): Verifier | undefined {
  const { jwtSecret, jwtPublicKey } = config;
  if (jwtPublicKey !== undefined && jwtPublicKeyPem === undefined) {
    throw new Error(`--jwt-public-key ${jwtPublicKey} was not read before building the app`);
  }
  if (jwtSecret === undefined && jwtPublicKeyPem === undefined) return undefined;
  return createVerifier({
    key: jwtSecret !== undefined ? { secret: jwtSecret } : { publicKeyPem: jwtPublicKeyPem! },
    audience: config.jwtAudience,
    issuer: config.jwtIssuer,
    clockSkew: config.jwtClockSkew,
  });
}
