/**
 * Counters for operators, rendered in the Prometheus text exposition format at `/metrics`.
 * One {@link Metrics} per server; the hub and the handler count into it.
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
] as const;

/** One of {@link REFUSE_REASONS}. */
export type RefuseReason = typeof REFUSE_REASONS[number];

/** Live values read at scrape time rather than counted. */
export interface Gauges {
  connections: { raw: number; chat: number };
  rooms: number;
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/** Monotonic counters of one server. Plain fields, so counting costs one addition. */
export class Metrics {
  messagesReceived = 0;
  messagesDelivered = 0;
  bytesReceived = 0;
  bytesSent = 0;
  readonly disconnects: Record<DisconnectReason, number> = zeroes(DISCONNECT_REASONS);
  readonly refused: Record<RefuseReason, number> = zeroes(REFUSE_REASONS);

  /** Render every metric with HELP and TYPE lines, ready to serve as `text/plain; version=0.0.4`. */
  render(gauges: Gauges): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
    };
    metric("chorus_connections", "gauge", "Open WebSocket connections by mode.", [
      ['{mode="raw"}', gauges.connections.raw],
      ['{mode="chat"}', gauges.connections.chat],
    ]);
    metric("chorus_rooms", "gauge", "Rooms with at least one member.", [["", gauges.rooms]]);
    metric("chorus_messages_received_total", "counter", "Messages received from clients.", [
      ["", this.messagesReceived],
    ]);
    metric(
      "chorus_messages_delivered_total",
      "counter",
      "Messages and events delivered to clients (one per recipient).",
      [["", this.messagesDelivered]],
    );
    metric("chorus_received_bytes_total", "counter", "Payload bytes received from clients.", [
      ["", this.bytesReceived],
    ]);
    metric("chorus_sent_bytes_total", "counter", "Payload bytes written to clients.", [
      ["", this.bytesSent],
    ]);
    metric(
      "chorus_disconnects_total",
      "counter",
      "Closed connections by reason.",
      DISCONNECT_REASONS.map((r) => [`{reason="${r}"}`, this.disconnects[r]]),
    );
    metric(
      "chorus_upgrades_refused_total",
      "counter",
      "WebSocket upgrades refused before a socket was created, by reason.",
      REFUSE_REASONS.map((r) => [`{reason="${r}"}`, this.refused[r]]),
    );
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
