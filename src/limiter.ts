/**
 * Connection limits (`--max-connections`, `--max-connections-per-ip`), counted from the
 * upgrade until the socket leaves. With `--workers` the counts live in a `SharedArrayBuffer`
 * and are updated with `Atomics`, so the limits hold for the whole process.
 * @module
 */

/** Whether a connection may be admitted, or which limit it hit. */
export type Admission = "ok" | "max_connections" | "max_connections_per_ip";

/** Per-IP counts are kept in this many hashed slots; IPs sharing a slot share a count. */
const IP_SLOTS = 65_536;

/** Counters for one process, shareable between workers. */
export function limiterTable(): Int32Array<SharedArrayBuffer> {
  return new Int32Array(new SharedArrayBuffer((1 + IP_SLOTS) * 4));
}

function slotOf(ip: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < ip.length; i++) hash = Math.imul(hash ^ ip.charCodeAt(i), 0x01000193);
  return 1 + ((hash >>> 0) % IP_SLOTS);
}

/**
 * Admits or refuses connections against the two limits. Slot 0 of the table is the total;
 * the rest are per-IP counts by hash (a collision can only make a limit stricter).
 */
export class ConnectionLimiter {
  readonly #table: Int32Array;

  constructor(
    readonly maxConnections: number,
    readonly maxPerIp: number,
    table: Int32Array = limiterTable(),
  ) {
    this.#table = table;
  }

  /** Open connections counted in this table (all workers when shared). */
  get total(): number {
    return Atomics.load(this.#table, 0);
  }

  /** Reserve one connection for `ip`, or say which limit it would break. */
  acquire(ip: string): Admission {
    const slot = slotOf(ip);
    if (Atomics.add(this.#table, 0, 1) >= this.maxConnections) {
      Atomics.sub(this.#table, 0, 1);
      return "max_connections";
    }
    if (Atomics.add(this.#table, slot, 1) >= this.maxPerIp) {
      Atomics.sub(this.#table, slot, 1);
      Atomics.sub(this.#table, 0, 1);
      return "max_connections_per_ip";
    }
    return "ok";
  }

  /** Give back a connection reserved by {@link acquire}. */
  release(ip: string): void {
    Atomics.sub(this.#table, slotOf(ip), 1);
    Atomics.sub(this.#table, 0, 1);
  }
}
