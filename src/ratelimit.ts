/**
 * A token bucket: `rate` tokens per second refill a bucket of `burst` tokens, and each action
 * takes one. Used per connection for messages, and for warn log lines.
 * @module
 */

/** Token bucket state; cheap enough to keep one per connection. */
export class TokenBucket {
  #tokens: number;
  #last: number;

  /**
   * @param rate tokens added per second; 0 means unlimited
   * @param burst bucket size, the most actions allowed at once
   * @param now clock in ms; injectable for tests
   */
  constructor(
    readonly rate: number,
    readonly burst: number,
    readonly now: () => number = performance.now.bind(performance),
  ) {
    this.#tokens = burst;
    this.#last = now();
  }

  /** Take one token if there is one; false means the action is over the limit. */
  take(): boolean {
    if (this.rate === 0) return true;
    const t = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((t - this.#last) / 1000) * this.rate);
    this.#last = t;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
