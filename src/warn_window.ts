/**
 * One warning that may repeat many times a second (every webhook event dropped by a full queue,
 * every failed retry) logged at most once per window: the first occurrence at once, then one
 * line per window with how many more there were. Operators see every kind of trouble without a
 * flood, and the counters of `/metrics` keep the exact numbers.
 * @module
 */
import type { LogFields, Logger } from "./log.ts";

/** A warning logged at most once per window, with the count of occurrences it stands for. */
export class WarnWindow {
  readonly #log: Logger;
  readonly #message: string;
  readonly #windowMs: number;
  /** Occurrences since the last line, and the fields of the latest one. */
  #pending = 0;
  #fields: LogFields = {};
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `message` is the line logged; `windowMs` the least time between two lines. */
  constructor(log: Logger, message: string, windowMs: number) {
    this.#log = log;
    this.#message = message;
    this.#windowMs = windowMs;
  }

  /**
   * Count `count` occurrences, with the fields of the latest. The first after a quiet window
   * is logged at once; later ones in the window are logged together when it ends.
   */
  note(fields: LogFields, count = 1): void {
    this.#pending += count;
    this.#fields = fields;
    if (this.#timer === undefined) this.#emit();
  }

  /** Log what is pending now and stop the window's timer (at shutdown). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending > 0) this.#log.warn(this.#message, { ...this.#fields, count: this.#pending });
    this.#pending = 0;
  }

  #emit(): void {
    this.#timer = undefined;
    if (this.#pending === 0) return;
    this.#log.warn(this.#message, { ...this.#fields, count: this.#pending });
    this.#pending = 0;
    this.#timer = setTimeout(() => this.#emit(), this.#windowMs);
    Deno.unrefTimer(this.#timer);
  }
}
