/**
 * Awaiting events in tests without sleeping: a timeout per awaited event, a queue of received
 * items, and polling a condition. No dependency on the hub, so the Redis backplane's tests can
 * use it alone.
 * @module
 */
/** How long any single awaited event may take before a test fails instead of hanging. */
export const EVENT_TIMEOUT_MS = 10_000;

/**
 * `promise`, or a failure naming `label` after `timeoutMs` instead of a hung test. The timer
 * starts when this is called and is cleared once the promise settles.
 */
export async function within<T>(
  promise: Promise<T>,
  label: string,
  timeoutMs = EVENT_TIMEOUT_MS,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(
          () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${label}`)),
          timeoutMs,
        )
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A queue whose `next()` resolves with the next pushed item, failing after a timeout. */
export class Inbox<T> {
  readonly #items: T[] = [];
  readonly #waiters: {
    resolve: (v: T) => void;
    reject: (e: Error) => void;
    timer: ReturnType<typeof setTimeout>;
  }[] = [];

  /** Number of items received and not yet taken. */
  get size(): number {
    return this.#items.length;
  }

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(item);
    } else {
      this.#items.push(item);
    }
  }

  next(label = "item", timeoutMs = EVENT_TIMEOUT_MS): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${label}`));
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }
}

/** Resolve once `predicate` holds, re-checking after each macrotask; fails after a timeout. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  label: string,
  timeoutMs = EVENT_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
