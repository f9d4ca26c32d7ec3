/**
 * Counters for operators, rendered in the Prometheus text exposition format at `/metrics`.
 * Each hub counts into its own row of a table; with `--workers` the table lives in a
 * `SharedArrayBuffer`, so whichever worker answers a scrape sums every worker's row.
 * @module
 */

/** Why a connection ended; each is a label value of `chorus_disconnects_total`. */
export const DISCONNECT_REASONS = [
  "client",
  "slow_consumer",
  "too_big",
  "rate_limited",
  "idle",
  "shutdown",
  "error",
  "token_expired",
  "kicked",
  "room_closed",
] as const;

/** One of {@link DISCONNECT_REASONS}. */
export type DisconnectReason = typeof DISCONNECT_REASONS[number];

/** Why an upgrade was refused; each is a label value of `chorus_upgrades_refused_total`. */
export const REFUSE_REASONS = [
  "bad_request",
  "bad_origin",
  "bad_protocol",
  "bad_name",
  "max_connections",
  "max_connections_per_ip",
  "shutting_down",
  "bad_token",
  "forbidden_room",
  "forbidden",
  "hook_unavailable",
] as const;

/** One of {@link REFUSE_REASONS}. */
export type RefuseReason = typeof REFUSE_REASONS[number];

/** Index of each plain counter and gauge in a row; the hot path adds to `row[C.x]`. */
export const C = {
  received: 0,
  delivered: 1,
  bytesIn: 2,
  bytesOut: 3,
  rawConnections: 4,
  chatConnections: 5,
  /** 1 in the row of a hub with a Redis backplane (`--redis-url`), so `/metrics` shows it. */
  backplaneOn: 6,
  /** 1 while that backplane's Redis connections are up. */
  backplaneUp: 7,
  backplaneErrors: 8,
  backplaneReconnects: 9,
  /** Bus messages not sent because Redis was unreachable. */
  backplaneDropped: 10,
  /** Batches the stream store failed to write (a full disk, say). */
  storeErrors: 11,
  /** Messages delivered without being stored, so no resume will return them. */
  unstored: 12,
  /** Open server-sent-events streams (always `chorus.v1`); the two above count WebSockets. */
  sseConnections: 13,
  /** Webhook events the application accepted (a 2xx). */
  webhookDelivered: 14,
  /** Webhook events dropped because the queue was full (`--webhook-queue`). */
  webhookDropped: 15,
  /** Webhook events given up on after retrying for the whole retry window. */
  webhookGivenUp: 16,
  /** Webhook requests sent again after a failure. */
  webhookRetries: 17,
  /** Webhook events waiting to be delivered. */
  webhookQueued: 18,
  /** Connect hook answers: allowed, denied, and failed or timed out. */
  connectAllowed: 19,
  connectDenied: 20,
  connectUnavailable: 21,
  /** Moderation hook verdicts: allow, replace, reject, and failed or timed out. */
  publishAllowed: 22,
  publishReplaced: 23,
  publishRejected: 24,
  publishUnavailable: 25,
} as const;

/**
 * The slots of {@link C} that say how things are now rather than count what happened: a row's
 * gauges mean nothing once its hub is gone, so {@link clearGauges} zeroes them.
 */
const GAUGES = [
  C.rawConnections,
  C.chatConnections,
  C.sseConnections,
  C.backplaneOn,
  C.backplaneUp,
  C.webhookQueued,
] as const;

const DISCONNECT_BASE = 26;
const REFUSE_BASE = DISCONNECT_BASE + DISCONNECT_REASONS.length;

/** Numbers per row: the counters and gauges above, then one per disconnect and refuse reason. */
export const ROW_LENGTH = REFUSE_BASE + REFUSE_REASONS.length;

/** Allocate a counter table for `rows` hubs, shareable between workers. */
export function metricsTable(rows: number): Float64Array<SharedArrayBuffer> {
  return new Float64Array(new SharedArrayBuffer(rows * ROW_LENGTH * 8));
}

/**
 * Zero the gauges of row `index` (open connections, backplane state) of a table of
 * {@link metricsTable}: for a worker that crashed, whose sockets are gone without being
 * counted out. Its counters stay, so totals never go backwards and a replacement worker adds
 * to them. Only call it once that worker can no longer run.
 */
export function clearGauges(table: Float64Array, index: number): void {
  for (const slot of GAUGES) table[index * ROW_LENGTH + slot] = 0;
}

/** One hub's disconnects and refused upgrades, by reason (see {@link Metrics.reasons}). */
export interface ReasonCounts {
  disconnects: Record<DisconnectReason, number>;
  refused: Record<RefuseReason, number>;
}

/** The counters of one hub, plus read access to the whole table for rendering. */
export class Metrics {
  /**
   * This hub's counters; only this hub writes them (and the main thread of `--workers`, which
   * zeroes the gauges of a crashed worker, see {@link clearGauges}).
   */
  readonly row: Float64Array;
  readonly #table: Float64Array;

  /** A private table when none is given; otherwise row `index` of a shared one. */
  constructor(table: Float64Array = new Float64Array(ROW_LENGTH), index = 0) {
    this.#table = table;
    this.row = table.subarray(index * ROW_LENGTH, (index + 1) * ROW_LENGTH);
  }

  /** Count one disconnect. */
  disconnect(reason: DisconnectReason): void {
    this.row[DISCONNECT_BASE + DISCONNECT_REASONS.indexOf(reason)]!++;
  }

  /** Count one refused upgrade. */
  refuse(reason: RefuseReason): void {
    this.row[REFUSE_BASE + REFUSE_REASONS.indexOf(reason)]!++;
  }

  /**
   * The Redis backplane of this server: `off` without one, `down` while any hub's Redis
   * connections are (`/healthz` then says `degraded`), `up` otherwise.
   */
  backplane(): "off" | "up" | "down" {
    let on = false;
    for (let r = 0; r < this.#table.length; r += ROW_LENGTH) {
      if (this.#table[r + C.backplaneOn] !== 1) continue;
      if (this.#table[r + C.backplaneUp] !== 1) return "down";
      on = true;
    }
    return on ? "up" : "off";
  }

  /**
   * This hub's disconnects and refused upgrades by reason, from its row alone: the operator's
   * live view shows each worker or instance apart (`src/admin_stats.ts`).
   */
  reasons(): ReasonCounts {
    const count = <R extends string>(reasons: readonly R[], base: number) =>
      Object.fromEntries(reasons.map((r, i) => [r, this.row[base + i]!])) as Record<R, number>;
    return {
      disconnects: count(DISCONNECT_REASONS, DISCONNECT_BASE),
      refused: count(REFUSE_REASONS, REFUSE_BASE),
    };
  }

  /** Sum of slot `i` over every row of the table. */
  #sum(i: number): number {
    let total = 0;
    for (let r = i; r < this.#table.length; r += ROW_LENGTH) total += this.#table[r]!;
    return total;
  }

  /**
   * Render every metric with HELP and TYPE lines (`text/plain; version=0.0.4`). `rooms` is
   * passed in because a room may span workers and must be counted once.
   */
  render(rooms: number): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
    };
    metric("chorus_connections", "gauge", "Open connections by mode and transport.", [
      ['{mode="raw",transport="websocket"}', this.#sum(C.rawConnections)],
      ['{mode="chat",transport="websocket"}', this.#sum(C.chatConnections)],
      ['{mode="chat",transport="sse"}', this.#sum(C.sseConnections)],
    ]);
    metric("chorus_rooms", "gauge", "Rooms with at least one member.", [["", rooms]]);
    metric("chorus_messages_received_total", "counter", "Messages received from clients.", [
      ["", this.#sum(C.received)],
    ]);
    metric(
      "chorus_messages_delivered_total",
      "counter",
      "Messages and events delivered to clients (one per recipient).",
      [["", this.#sum(C.delivered)]],
    );
    metric("chorus_received_bytes_total", "counter", "Payload bytes received from clients.", [
      ["", this.#sum(C.bytesIn)],
    ]);
    metric("chorus_sent_bytes_total", "counter", "Payload bytes written to clients.", [
      ["", this.#sum(C.bytesOut)],
    ]);
    metric(
      "chorus_disconnects_total",
      "counter",
      "Closed connections by reason.",
      DISCONNECT_REASONS.map((r, i) => [`{reason="${r}"}`, this.#sum(DISCONNECT_BASE + i)]),
    );
    metric(
      "chorus_upgrades_refused_total",
      "counter",
      "WebSocket upgrades and event streams refused before a connection was made, by reason.",
      REFUSE_REASONS.map((r, i) => [`{reason="${r}"}`, this.#sum(REFUSE_BASE + i)]),
    );
    metric(
      "chorus_store_write_errors_total",
      "counter",
      "Batches of messages the stream store could not write (see the error log).",
      [["", this.#sum(C.storeErrors)]],
    );
    metric(
      "chorus_store_unstored_messages_total",
      "counter",
      "Messages delivered without being stored; no resume returns them.",
      [["", this.#sum(C.unstored)]],
    );
    metric(
      "chorus_webhook_events_total",
      "counter",
      "Webhook events by outcome: delivered, dropped (queue full) or given_up (retried too long).",
      [
        ['{outcome="delivered"}', this.#sum(C.webhookDelivered)],
        ['{outcome="dropped"}', this.#sum(C.webhookDropped)],
        ['{outcome="given_up"}', this.#sum(C.webhookGivenUp)],
      ],
    );
    metric("chorus_webhook_retries_total", "counter", "Webhook requests sent again.", [
      ["", this.#sum(C.webhookRetries)],
    ]);
    metric("chorus_webhook_queued_events", "gauge", "Webhook events waiting to be delivered.", [
      ["", this.#sum(C.webhookQueued)],
    ]);
    metric(
      "chorus_hook_verdicts_total",
      "counter",
      "Answers of the connect and moderation hooks; unavailable counts failures and timeouts.",
      [
        ['{hook="connect",verdict="allow"}', this.#sum(C.connectAllowed)],
        ['{hook="connect",verdict="deny"}', this.#sum(C.connectDenied)],
        ['{hook="connect",verdict="unavailable"}', this.#sum(C.connectUnavailable)],
        ['{hook="publish",verdict="allow"}', this.#sum(C.publishAllowed)],
        ['{hook="publish",verdict="replace"}', this.#sum(C.publishReplaced)],
        ['{hook="publish",verdict="reject"}', this.#sum(C.publishRejected)],
        ['{hook="publish",verdict="unavailable"}', this.#sum(C.publishUnavailable)],
      ],
    );
    const backplane = this.backplane();
    if (backplane !== "off") {
      metric("chorus_backplane_up", "gauge", "1 while the Redis backplane is connected.", [
        ["", backplane === "up" ? 1 : 0],
      ]);
      metric("chorus_backplane_errors_total", "counter", "Errors reported by the Redis client.", [
        ["", this.#sum(C.backplaneErrors)],
      ]);
      metric(
        "chorus_backplane_reconnects_total",
        "counter",
        "Times the Redis backplane came back after being lost.",
        [["", this.#sum(C.backplaneReconnects)]],
      );
      metric(
        "chorus_backplane_dropped_total",
        "counter",
        "Messages for other instances dropped because Redis was unreachable.",
        [["", this.#sum(C.backplaneDropped)]],
      );
    }
    return out.join("\n") + "\n";
  }
}

/** UTF-8 length of a string without encoding it, for byte counters and size limits. */
export function utf8Length(s: string): number {
  let bytes = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2; // a surrogate pair: 2 code units, 4 bytes
        i++;
        continue;
      }
      bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}
