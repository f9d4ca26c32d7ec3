/**
 * One chorus server's parts built from its config: counters, hub and request handler. Both
 * `main.ts` and the tests build servers this way, so tests run what production runs.
 * @module
 */
import type { Config } from "./config.ts";
import { Hub } from "./hub.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { createHandler, type Handler } from "./server.ts";

/** The parts of one server; `Deno.serve` takes `handler`, shutdown uses `hub`. */
export interface App {
  hub: Hub;
  metrics: Metrics;
  handler: Handler;
}

/** Extra wiring that does not come from flags. */
export interface AppOptions {
  log: Logger;
  /** Clock for history expiry and timestamps; tests inject one. */
  now?: () => number;
}

/** Build the hub and handler of one server from its config. */
export function createApp(config: Config, { log, now }: AppOptions): App {
  const metrics = new Metrics();
  const hub = new Hub({
    history: config.history,
    historyTtlMs: config.historyTtl * 1000,
    maxBufferedBytes: config.maxBufferedBytes,
    maxConnections: config.maxConnections,
    maxConnectionsPerIp: config.maxConnectionsPerIp,
    metrics,
    onDrop: (member, reason) =>
      log.warn("connection closed by policy", {
        reason,
        id: member.id,
        ip: member.ip,
        room: member.room,
      }),
    now,
  });
  return { hub, metrics, handler: createHandler({ config, hub, log }) };
}
