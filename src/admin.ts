/**
 * The server side of the operator's live view (`/admin`): the parts one worker or instance
 * needs, built together when `--api-key` is set. Its numbers ({@link ClusterStats}) go to the
 * open admin streams ({@link AdminStreams}) and to the other nodes every second; its controls
 * close connections here and, over the bus, on every other node. The HTTP side is
 * `src/admin_api.ts`; `docs/api.md` describes the endpoints.
 * @module
 */
import { createAdminApi, MAX_REASON_BYTES } from "./admin_api.ts";
import { ClusterStats, STATS_INTERVAL_MS } from "./admin_stats.ts";
import { AdminStreams, MAX_ADMIN_STREAMS } from "./admin_streams.ts";
import type { Bus, BusMessage } from "./bus.ts";
import type { OperatorClose } from "./close.ts";
import type { Hub } from "./hub.ts";
import type { Logger } from "./log.ts";
import { utf8Length } from "./metrics.ts";
import type { ApiHandler } from "./server.ts";
import { SSE_PING_MS } from "./sse_wire.ts";

/** What {@link createAdmin} builds from. */
export interface AdminDeps {
  hub: Hub;
  log: Logger;
  /** The hub's bus; none for a single process. */
  bus?: Bus | undefined;
  /** This node's label in the stats: `worker 2`, `instance ID`. */
  label: string;
  /** Largest body `POST /api/admin/publish` takes (`--max-message-bytes`). */
  maxMessageBytes: number;
  /** See {@link MAX_ADMIN_STREAMS}. */
  maxStreams?: number;
}

/** An operator's close: of one member's connections (`id`), or of a whole room (`id` null). */
export interface CloseOrder {
  room: string;
  id: string | null;
  why: OperatorClose;
  /** The close reason the members see; null for the one of `src/close.ts`. */
  reason: string | null;
}

/** What a close did on the node that took it. */
export interface CloseResult {
  /** Connections closed on this node. */
  disconnected: number;
  /** Whether the order went to the other nodes too (they close theirs and do not answer). */
  relayed: boolean;
}

/** The admin side of one node. */
export interface Admin {
  /** Answers `/api/admin/…` once `src/api.ts` has checked the origin and the key. */
  handler: ApiHandler;
  /** A message from another hub (the hub's `onBus`): stats, a relayed close, a goodbye. */
  receive(message: BusMessage): void;
  /** End the admin streams and stop the timer; at shutdown, before the server stops. */
  close(): void;
}

/** Build the admin side of one node and start its one-second timer. */
export function createAdmin(deps: AdminDeps): Admin {
  const { hub, log, bus } = deps;
  const publish = bus ? (m: BusMessage) => bus.publish(m) : undefined;
  const stats = new ClusterStats({ hub, label: deps.label, publish });
  const streams = new AdminStreams(deps.maxStreams ?? MAX_ADMIN_STREAMS);
  const pingEvery = Math.max(1, Math.round(SSE_PING_MS / STATS_INTERVAL_MS));
  let ticks = 0;
  const timer = setInterval(() => {
    stats.announce();
    if (streams.size === 0) return;
    streams.send("stats", stats.snapshot());
    if (++ticks % pingEvery === 0) streams.ping();
  }, STATS_INTERVAL_MS);
  Deno.unrefTimer(timer);

  /** Close the connections an order names on this node; how many. */
  const closeHere = (order: CloseOrder): number => {
    const peers = [];
    for (const m of hub.localMembers()) {
      if (m.room === order.room && (order.id === null || m.id === order.id)) peers.push(m.socket);
    }
    for (const peer of peers) hub.drop(peer, order.why, order.reason ?? undefined);
    return peers.length;
  };

  const closeAll = (order: CloseOrder): CloseResult => {
    const disconnected = closeHere(order);
    publish?.({ t: "kick", node: hub.node, ...order });
    return { disconnected, relayed: publish !== undefined };
  };

  return {
    handler: createAdminApi({
      hub,
      log,
      stats,
      streams,
      close: closeAll,
      maxMessageBytes: deps.maxMessageBytes,
    }),
    receive(m) {
      stats.receive(m);
      if (m.t !== "kick" || !isOrder(m)) return;
      const { room, id, why, reason } = m;
      const disconnected = closeHere({ room, id, why, reason });
      if (disconnected > 0) {
        log.info("admin close relayed", { from: m.node, room, id: id ?? undefined, disconnected });
      }
    },
    close() {
      clearInterval(timer);
      streams.close();
    },
  };
}

/**
 * Whether a relayed order is one this version can carry out: a Redis shared with another
 * chorus version could carry others, and a close reason too long for a close frame throws.
 */
function isOrder(m: CloseOrder): boolean {
  return typeof m.room === "string" && (m.id === null || typeof m.id === "string") &&
    (m.why === "kicked" || m.why === "room_closed") &&
    (m.reason === null ||
      (typeof m.reason === "string" && utf8Length(m.reason) <= MAX_REASON_BYTES));
}
