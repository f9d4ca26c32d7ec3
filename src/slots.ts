/**
 * Connection slots: a connection holds one under the connection limits from its upgrade until
 * it is gone. A connection the server dropped keeps its slot until its peer has finished
 * closing (Deno keeps the TCP connection until then), so peers that ignore close frames cannot
 * pile up past the limits.
 * @module
 */
import type { Admission, ConnectionLimiter } from "./limiter.ts";

/** How long a dropped connection's peer may take to finish closing before its slot is freed. */
export const CLOSING_GRACE_MS = 30_000;

/** The slots of one hub's connections, over a (possibly shared) {@link ConnectionLimiter}. */
export class Slots<K> {
  readonly #limiter: ConnectionLimiter;
  /** Dropped connections whose peers have not finished closing, with their IP. */
  readonly #closing = new Map<K, { ip: string; timer: ReturnType<typeof setTimeout> }>();

  constructor(limiter: ConnectionLimiter) {
    this.#limiter = limiter;
  }

  /** Whether one more connection from `ip` fits under the limits; reserves it when it does. */
  acquire(ip: string): Admission {
    return this.#limiter.acquire(ip);
  }

  /** Free the slot of a connection that ended cleanly. */
  release(ip: string): void {
    this.#limiter.release(ip);
  }

  /**
   * Keep the slot of a connection the server dropped until {@link released} is called for it,
   * or {@link CLOSING_GRACE_MS} has passed (in case its close is never reported).
   */
  hold(key: K, ip: string): void {
    const timer = setTimeout(() => this.released(key), CLOSING_GRACE_MS);
    Deno.unrefTimer(timer);
    this.#closing.set(key, { ip, timer });
  }

  /** The peer of a held connection finished closing: free its slot. No-op when none is held. */
  released(key: K): void {
    const held = this.#closing.get(key);
    if (!held) return;
    clearTimeout(held.timer);
    this.#closing.delete(key);
    this.#limiter.release(held.ip);
  }

  /** Free every held slot at once (the hub is going away). */
  releaseAll(): void {
    for (const key of [...this.#closing.keys()]) this.released(key);
  }
}
