/**
 * Connection limits (`--max-connections`, `--max-connections-per-ip`), counted from the
 * upgrade until the socket leaves. With `--workers` the counts live in a `SharedArrayBuffer`
 * and are updated with `Atomics`, so the limits hold for the whole process; each worker also
 * keeps its own share of them in a row of that table, so that the main thread can give back
 * exactly what a crashed worker held ({@link releaseWorker}).
 * @module
 */

/** Whether a connection may be admitted, or which limit it hit. */
export type Admission = "ok" | "max_connections" | "max_connections_per_ip";

/** Per-IP counts are kept in this many hashed slots; IPs sharing a slot share a count. */
const IP_SLOTS = 65_536;

/** Int32s per row: the total, then one count per hashed IP slot. */
const ROW = 1 + IP_SLOTS;

/** Where worker `worker`'s row starts in `table`; throws when the table has none for it. */
function rowOf(table: Int32Array, worker: number): number {
  const start = (1 + worker) * ROW;
  if (start + ROW > table.length) {
    throw new RangeError(`the limiter table has no row for worker ${worker}`);
  }
  return start;
}

/**
 * Counters for one process, shareable between workers: row 0 is what admission checks (the
 * whole process), and with `workers` > 0 row `1 + i` is worker `i`'s share of it. A worker's
 * row is 256 KiB of address space, of which only the pages of the slots it uses are touched:
 * small next to the memory of the worker's own JavaScript heap.
 */
export function limiterTable(workers = 0): Int32Array<SharedArrayBuffer> {
  return new Int32Array(new SharedArrayBuffer((1 + workers) * ROW * 4));
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
  /** Start of this worker's row in the table, when it keeps one. */
  readonly #own: number | undefined;

  /**
   * `worker` is the index of a `--workers` thread in a table of {@link limiterTable} made for
   * the workers: its acquisitions are also counted in its row.
   */
  constructor(
    readonly maxConnections: number,
    readonly maxPerIp: number,
    table: Int32Array = limiterTable(),
    worker?: number,
  ) {
    this.#table = table;
    this.#own = worker === undefined ? undefined : rowOf(table, worker);
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
    if (this.#own !== undefined) {
      Atomics.add(this.#table, this.#own, 1);
      Atomics.add(this.#table, this.#own + slot, 1);
    }
    return "ok";
  }

  /** Give back a connection reserved by {@link acquire}. */
  release(ip: string): void {
    const slot = slotOf(ip);
    if (this.#own !== undefined) {
      Atomics.sub(this.#table, this.#own + slot, 1);
      Atomics.sub(this.#table, this.#own, 1);
    }
    Atomics.sub(this.#table, slot, 1);
    Atomics.sub(this.#table, 0, 1);
  }
}

/**
 * Give back every connection worker `worker` still held in a table of {@link limiterTable}:
 * for a worker that crashed, whose sockets are gone without a {@link ConnectionLimiter.release}.
 * Its row is zeroed, so a replacement can use it. Returns how many connections were freed.
 * Only call it once the worker can no longer run.
 */
export function releaseWorker(table: Int32Array, worker: number): number {
  const own = rowOf(table, worker);
  const freed = Atomics.exchange(table, own, 0);
  Atomics.sub(table, 0, freed);
  for (let slot = 1; slot < ROW; slot++) {
    const held = Atomics.exchange(table, own + slot, 0);
    if (held !== 0) Atomics.sub(table, slot, held);
  }
  return freed;
}
