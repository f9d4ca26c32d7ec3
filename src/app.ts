/**
 * One chorus server's parts built from its config: counters, hub and request handler. `main.ts`,
 * each worker of `--workers` and the tests build servers this way, so tests run what
 * production runs.
 * @module
 */
import { createApi } from "./api.ts";
import { createVerifier, type Verifier } from "./auth.ts";
import type { Bus } from "./bus.ts";
import type { Config } from "./config.ts";
import { Hub } from "./hub.ts";
import { ConnectionLimiter } from "./limiter.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { createHandler, type Handler } from "./server.ts";

/** The parts of one server; `Deno.serve` takes `handler`, shutdown uses `hub`. */
export interface App {
  hub: Hub;
  handler: Handler;
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
  bus?: Bus;
}

/** Extra wiring that does not come from flags. */
export interface AppOptions {
  log: Logger;
  /** Clock for history expiry and timestamps; tests inject one. */
  now?: () => number;
  /** Set in a worker of `--workers`. */
  shared?: Shared;
  /** The PEM text of the `--jwt-public-key` file, which `main.ts` reads and checks. */
  jwtPublicKeyPem?: string;
  /** Builds the hub's bus to other instances (see {@link redisBackplane}); wins over `shared.bus`. */
  bus?: BusFactory;
}

/** Makes a bus that counts into the hub's metrics. */
export type BusFactory = (metrics: Metrics) => Bus;

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
  return (metrics) =>
    new RedisBus({
      url,
      history: config.history,
      historyTtlMs: config.historyTtl * 1000,
      log,
      metrics,
    });
}

/** Build the hub and handler of one server from its config. */
export function createApp(
  config: Config,
  { log, now, shared, jwtPublicKeyPem, bus }: AppOptions,
): App {
  const metrics = new Metrics(shared?.metrics, shared?.index);
  const hub = new Hub({
    history: config.history,
    historyTtlMs: config.historyTtl * 1000,
    historyMaxBytes: config.historyMaxBytes,
    maxBufferedBytes: config.maxBufferedBytes,
    limiter: new ConnectionLimiter(
      config.maxConnections,
      config.maxConnectionsPerIp,
      shared?.limiter,
      shared?.index,
    ),
    metrics,
    bus: bus?.(metrics) ?? shared?.bus,
    onDrop: (member, reason) =>
      log.warn("connection closed by policy", {
        reason,
        id: member.id,
        ip: member.ip,
        room: member.room,
      }),
    now,
  });
  const api = config.apiKey === undefined ? undefined : createApi({
    apiKey: config.apiKey,
    maxMessageBytes: config.maxMessageBytes,
    hub,
    log,
  });
  const verify = createConnectionVerifier(config, jwtPublicKeyPem);
  return { hub, handler: createHandler({ config, hub, log, verify, api }) };
}

/** The token check `--jwt-secret` or `--jwt-public-key` asks for; none when neither is set. */
function createConnectionVerifier(
  config: Config,
  jwtPublicKeyPem: string | undefined,
): Verifier | undefined {
  const { jwtSecret, jwtPublicKey } = config;
  if (jwtSecret === undefined && jwtPublicKey === undefined) return undefined;
  if (jwtPublicKey !== undefined && jwtPublicKeyPem === undefined) {
    throw new Error(`--jwt-public-key ${jwtPublicKey} was not read before building the app`);
  }
  return createVerifier({
    key: jwtSecret !== undefined ? { secret: jwtSecret } : { publicKeyPem: jwtPublicKeyPem! },
    audience: config.jwtAudience,
    issuer: config.jwtIssuer,
    clockSkew: config.jwtClockSkew,
  });
}
