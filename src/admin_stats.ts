/**
 * The operator's live numbers (`GET /api/admin/stream`, `docs/api.md`): for each worker or
 * instance (a "node"), its connections by mode and transport, the messages it received and
 * delivered, the bytes it wrote and its rooms; the whole cluster's totals; and the cluster's
 * disconnects and refused upgrades by reason. Counters are cumulative, so a reader that misses
 * an event loses nothing: the page diffs successive events into rates.
 *
 * A hub reads its own numbers off its own metrics row. With a bus (`--workers`, `--redis-url`)
 * it publishes them every {@link STATS_INTERVAL_MS}, and keeps the latest of every other hub,
 * forgetting one that says goodbye or falls silent for {@link STATS_EXPIRY_MS}. One mechanism
 * for both: workers share a metrics table too, but instances share nothing but the bus, and a
 * restarted worker is a new node that continues its predecessor's row (the main thread's
 * `bye` for the crashed one removes the old line at once, so no counter is counted twice).
 * @module
 */
import type { BusMessage } from "./bus.ts";
import type { Hub } from "./hub.ts";
import { C } from "./metrics.ts";

/** How often a hub publishes its numbers, and how often an admin stream gets an event. */
export const STATS_INTERVAL_MS = 1000;

/** A node not heard from for this long (several missed intervals) is no longer listed. */
export const STATS_EXPIRY_MS = 5000;

/** Open connections by mode and transport, as `chorus_connections` labels them. */
export interface Connections {
  raw: number;
  chat: number;
  sse: number;
}

/** What one node counts, and what the cluster's total adds up. */
export interface Counts {
  connections: Connections;
  /** Messages received from clients, since the node's row began. */
  received: number;
  /** Messages and events delivered to clients (one per recipient). */
  delivered: number;
  /** Payload bytes written to clients. */
  bytesOut: number;
  /**
   * Rooms with members on the node; in the total, rooms with members anywhere, each counted
   * once (a room spanning nodes is on each node's line).
   */
  rooms: number;
}

/** One node's line of the stats event. */
export interface NodeLine extends Counts {
  /** The node's hub id (member and message ids start with it). */
  node: string;
  /** For people: `worker 2`, or `instance ID`. */
  label: string;
}

/** What a hub publishes of itself: its line and its counts by reason. */
export interface NodeStats extends NodeLine {
  refused: Record<string, number>;
  disconnects: Record<string, number>;
}

/** The `data` of one `event: stats` of the admin stream. */
export interface StatsEvent {
  /** When the event was made, ms since the epoch. */
  ts: number;
  /** This node first, then the others in the order they were first heard. */
  nodes: NodeLine[];
  total: Counts;
  /** Refused upgrades and event streams by reason, all nodes together. */
  refused: Record<string, number>;
  /** Closed connections by reason, all nodes together. */
  disconnects: Record<string, number>;
}

/** What {@link ClusterStats} is built from. */
export interface ClusterStatsOptions {
  hub: Hub;
  /** This node's label; see {@link NodeLine.label}. */
  label: string;
  /** Where to publish this node's numbers; none for a single process. */
  publish?: ((message: BusMessage) => void) | undefined;
  /** Clock in ms; injectable for tests. */
  now?: (() => number) | undefined;
}

/** This node's numbers and the latest of every other node of the bus. */
export class ClusterStats {
  readonly #hub: Hub;
  readonly #label: string;
  readonly #publish: ClusterStatsOptions["publish"];
  readonly #now: () => number;
  /** Other nodes' latest numbers, with when they were heard. */
  readonly #others = new Map<string, { stats: NodeStats; at: number }>();

  constructor(options: ClusterStatsOptions) {
    this.#hub = options.hub;
    this.#label = options.label;
    this.#publish = options.publish;
    this.#now = options.now ?? Date.now;
  }

  /** This node's numbers now, read off its metrics row. */
  own(): NodeStats {
    const hub = this.#hub;
    const row = hub.metrics.row;
    const { refused, disconnects } = hub.metrics.reasons();
    return {
      node: hub.node,
      label: this.#label,
      connections: {
        raw: row[C.rawConnections]!,
        chat: row[C.chatConnections]!,
        sse: row[C.sseConnections]!,
      },
      received: row[C.received]!,
      delivered: row[C.delivered]!,
      bytesOut: row[C.bytesOut]!,
      rooms: hub.localRooms,
      refused,
      disconnects,
    };
  }

  /** Tell the other nodes this node's numbers (every {@link STATS_INTERVAL_MS}). */
  announce(): void {
    this.#publish?.({ t: "stats", node: this.#hub.node, stats: this.own() });
  }

  /** A message from another hub: keep its numbers, or forget a node that left. */
  receive(m: BusMessage): void {
    if (m.t === "bye") this.#others.delete(m.node);
    else if (m.t === "stats" && isNodeStats(m.stats)) {
      this.#others.set(m.node, { stats: { ...m.stats, node: m.node }, at: this.#now() });
    }
  }

  /** The event the admin streams send now: every live node's line, and the totals. */
  snapshot(): StatsEvent {
    const now = this.#now();
    const all = [this.own()];
    for (const [node, { stats, at }] of this.#others) {
      if (now - at > STATS_EXPIRY_MS) this.#others.delete(node);
      else all.push(stats);
    }
    const total: Counts = {
      connections: { raw: 0, chat: 0, sse: 0 },
      received: 0,
      delivered: 0,
      bytesOut: 0,
      rooms: this.#hub.rooms,
    };
    const refused: Record<string, number> = {};
    const disconnects: Record<string, number> = {};
    const nodes = all.map(({ refused: r, disconnects: d, ...line }) => {
      total.connections.raw += line.connections.raw;
      total.connections.chat += line.connections.chat;
      total.connections.sse += line.connections.sse;
      total.received += line.received;
      total.delivered += line.delivered;
      total.bytesOut += line.bytesOut;
      addInto(refused, r);
      addInto(disconnects, d);
      return line;
    });
    return { ts: now, nodes, total, refused, disconnects };
  }
}

/** Add every count of `from` into `into`, by key. */
function addInto(into: Record<string, number>, from: Record<string, number>): void {
  for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n;
}

/**
 * Whether a bus message's numbers have the shape this version publishes: a Redis shared with
 * another chorus version could carry others, which are left out rather than summed wrong.
 */
function isNodeStats(s: unknown): s is NodeStats {
  const n = s as NodeStats | null;
  const counts = (r: unknown) =>
    typeof r === "object" && r !== null && Object.values(r).every((v) => typeof v === "number");
  const c = n?.connections;
  return typeof n === "object" && n !== null && typeof n.label === "string" && counts(c) &&
    c !== undefined && typeof c.raw === "number" && typeof c.chat === "number" &&
    typeof c.sse === "number" &&
    typeof n.received === "number" &&
    typeof n.delivered === "number" && typeof n.bytesOut === "number" &&
    typeof n.rooms === "number" && counts(n.refused) && counts(n.disconnects);
}
