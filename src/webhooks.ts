/**
 * Webhook delivery: a bounded queue of events and one loop that POSTs them to `--webhook-url`,
 * batched, signed (`src/hook_client.ts`) and retried. Queueing is O(1) and never waits, so the
 * hub's fan-out never waits for the application; one request at a time keeps every room's
 * events in order; a dead application costs at most `--webhook-queue` events of memory, and
 * what does not fit is counted and logged, never lost silently. `docs/hooks.md#webhooks` is the
 * prose twin of this file.
 * @module
 */
import type { WebhookEventType } from "./config.ts";
import { type HookAnswer, HookError, type HookRequest, postSigned } from "./hook_client.ts";
import type { Logger } from "./log.ts";
import { C } from "./metrics.ts";
import { WarnWindow } from "./warn_window.ts";

/** One event as the application receives it: its type, room and time (ms), then its fields. */
export interface WebhookEvent {
  type: WebhookEventType;
  room: string;
  ts: number;
  [field: string]: unknown;
}

/** Most events in one request; more wait for the next one. */
export const MAX_BATCH_EVENTS = 100;

/** The timings of delivery; production uses {@link WEBHOOK_TIMINGS}, tests shorten them. */
export interface WebhookTimings {
  /** Longest an event waits for more to share its request (unless {@link MAX_BATCH_EVENTS} come). */
  batchMs: number;
  /** Upper bound of the first retry's delay; it doubles with every failure... */
  retryBaseMs: number;
  /** ...up to this bound. Each delay is drawn uniformly below its bound ("full jitter"). */
  retryCapMs: number;
  /** A request is retried until this long after its first attempt; then its events are given up. */
  retryWindowMs: number;
  /** Longest a shutdown waits for the queue to be delivered. */
  shutdownMs: number;
  /** Least time between two warn lines about one kind of trouble (drops, failures, give-ups). */
  warnIntervalMs: number;
}

/** The production timings: batches of up to 1 s, retries from 1 s doubling to 60 s for 5 min. */
export const WEBHOOK_TIMINGS: Readonly<WebhookTimings> = Object.freeze({
  batchMs: 1000,
  retryBaseMs: 1000,
  retryCapMs: 60_000,
  retryWindowMs: 5 * 60_000,
  shutdownMs: 2000,
  warnIntervalMs: 10_000,
});

/**
 * The upper bound of the delay before retry number `attempt + 1` (0-based `attempt` counts the
 * failures so far, minus one): {@link WebhookTimings.retryBaseMs} doubled per failure, capped at
 * {@link WebhookTimings.retryCapMs}. The delay itself is drawn uniformly below it.
 */
export function retryBound(
  attempt: number,
  timings: Pick<WebhookTimings, "retryBaseMs" | "retryCapMs">,
): number {
  return Math.min(timings.retryCapMs, timings.retryBaseMs * 2 ** Math.min(attempt, 30));
}

/** What {@link Webhooks} needs; all of it comes from the config in production. */
export interface WebhooksOptions {
  /** `--webhook-url`. */
  url: string;
  /** `signingKey(--webhook-secret)`, or its promise. */
  key: HookRequest["key"];
  /** `--webhook-events`: the types sent; others are never queued. */
  types: readonly WebhookEventType[];
  /** `--webhook-timeout`, in ms. */
  timeoutMs: number;
  /** `--webhook-queue`: events held at most, the one in flight included. */
  limit: number;
  /** The hub's metrics row; the `webhook` slots are written here. */
  row: Float64Array;
  log: Logger;
  /** Overrides of {@link WEBHOOK_TIMINGS}. */
  timings?: Partial<WebhookTimings> | undefined;
  /** Makes one request; {@link postSigned} in production, a fake in unit tests. */
  post?: ((request: HookRequest) => Promise<HookAnswer>) | undefined;
  /** A number in [0, 1) for the jitter; `Math.random` by default. */
  random?: (() => number) | undefined;
}

/** A place in the queue taken now and filled later, so an event keeps the order it began in. */
export interface Reservation {
  /** Put the event in the reserved place. */
  fill(event: WebhookEvent): void;
  /** Give the place up: there is no event after all. */
  cancel(): void;
}

const READY = 0;
const PENDING = 1;
const CANCELLED = 2;

interface Entry {
  event: WebhookEvent | undefined;
  /** When it was queued (ms), for {@link WebhookTimings.batchMs}. */
  at: number;
  state: typeof READY | typeof PENDING | typeof CANCELLED;
}

/** What the delivery loop is sleeping for, if anything: more events, or a retry's delay. */
type Sleep = { kind: "events" | "retry"; wake: () => void };

/** The webhook queue and its delivery loop, one per hub. */
export class Webhooks {
  readonly #options: WebhooksOptions;
  readonly #timings: WebhookTimings;
  readonly #types: ReadonlySet<WebhookEventType>;
  readonly #post: NonNullable<WebhooksOptions["post"]>;
  readonly #random: () => number;
  readonly #row: Float64Array;
  /** Entries from {@link #head} on; the array is compacted as the head moves. */
  #queue: Entry[] = [];
  #head = 0;
  /** Queued (ready or reserved) plus in-flight events: what the bound counts. */
  #size = 0;
  #running: Promise<void> | undefined;
  #sleep: Sleep | undefined;
  /** Set by {@link hurry}: send without waiting for a batch to fill. */
  #hurry = false;
  /** Set by {@link drain}: stop at this time (ms since the epoch). */
  #deadline: number | undefined;
  #stopped = false;
  readonly #dropped: WarnWindow;
  readonly #failing: WarnWindow;
  readonly #givenUp: WarnWindow;

  constructor(options: WebhooksOptions) {
    this.#options = options;
    this.#timings = { ...WEBHOOK_TIMINGS, ...options.timings };
    this.#types = new Set(options.types);
    this.#post = options.post ?? postSigned;
    this.#random = options.random ?? Math.random;
    this.#row = options.row;
    const every = this.#timings.warnIntervalMs;
    this.#dropped = new WarnWindow(options.log, "webhook queue full, events dropped", every);
    this.#failing = new WarnWindow(options.log, "webhook request failed, retrying", every);
    this.#givenUp = new WarnWindow(options.log, "webhook events given up", every);
  }

  /** Whether events of `type` are sent (`--webhook-events`); callers skip building the others. */
  wants(type: WebhookEventType): boolean {
    return this.#types.has(type);
  }

  /** Events queued or in flight. */
  get size(): number {
    return this.#size;
  }

  /** Queue an event; O(1), never waits. A full queue drops it (counted, logged). */
  push(event: WebhookEvent): void {
    if (!this.#types.has(event.type)) return;
    if (!this.#room()) return;
    this.#append({ event, at: Date.now(), state: READY });
  }

  /**
   * Take the next place in the queue for an event not known yet (a room's transition waiting
   * for the cluster's verdict), so events queued meanwhile come after it. Delivery waits at
   * that place until it is filled or cancelled: the caller must do one of them soon.
   */
  reserve(): Reservation {
    if (!this.#room()) return { fill: () => {}, cancel: () => {} };
    const entry: Entry = { event: undefined, at: Date.now(), state: PENDING };
    this.#append(entry);
    return {
      fill: (event) => {
        if (entry.state !== PENDING) return;
        if (this.#types.has(event.type)) {
          entry.event = event;
          entry.state = READY;
        } else this.#cancel(entry);
        this.#wake("events");
      },
      cancel: () => {
        if (entry.state !== PENDING) return;
        this.#cancel(entry);
        this.#wake("events");
      },
    };
  }

  /**
   * From now on, send what is queued at once rather than after the batch time (a shutdown
   * begins; see {@link drain}).
   */
  hurry(): void {
    this.#hurry = true;
    this.#wake("events");
  }

  /**
   * Deliver what is queued, sending at once, until the queue is empty or `deadline` (ms since
   * the epoch) passes; then stop for good. What is still queued is counted as dropped and
   * logged. A request in flight at the deadline is left to its own timeout.
   */
  async drain(deadline = Date.now() + this.#timings.shutdownMs): Promise<void> {
    this.#hurry = true;
    this.#deadline = deadline;
    this.#wake("events");
    this.#wake("retry");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((r) =>
      timer = setTimeout(r, Math.max(0, deadline - Date.now()))
    );
    await Promise.race([this.#running, late]);
    clearTimeout(timer);
    this.#stopped = true;
    this.#wake("events");
    this.#wake("retry");
    const left = this.#queued();
    if (left > 0) {
      this.#row[C.webhookDropped]! += left;
      this.#options.log.warn("webhook events not delivered before shutdown", { count: left });
      this.#size -= left;
      this.#queue = [];
      this.#head = 0;
      this.#gauge();
    }
    for (const w of [this.#dropped, this.#failing, this.#givenUp]) w.flush();
  }

  /** Whether one more event fits; counts and logs it as dropped when not. */
  #room(): boolean {
    if (this.#size < this.#options.limit && !this.#stopped) return true;
    this.#row[C.webhookDropped]!++;
    this.#dropped.note({ limit: this.#options.limit, stopped: this.#stopped || undefined });
    return false;
  }

  #append(entry: Entry): void {
    this.#queue.push(entry);
    this.#size++;
    this.#gauge();
    if (this.#running === undefined) this.#start();
    else if (this.#queue.length - this.#head >= MAX_BATCH_EVENTS) this.#wake("events");
  }

  #cancel(entry: Entry): void {
    entry.state = CANCELLED;
    entry.event = undefined;
    this.#size--;
    this.#gauge();
  }

  /** Ready and reserved events not yet taken for a request. */
  #queued(): number {
    let n = 0;
    for (let i = this.#head; i < this.#queue.length; i++) {
      if (this.#queue[i]!.state !== CANCELLED) n++;
    }
    return n;
  }

  #gauge(): void {
    this.#row[C.webhookQueued] = this.#size;
  }

  /**
   * Run the delivery loop until the queue is empty; a push starts it again. It starts after the
   * pushing code has run, so events pushed together share a request.
   */
  #start(): void {
    this.#running = Promise.resolve().then(() => this.#run()).finally(() => {
      this.#running = undefined;
      if (!this.#stopped && this.#head < this.#queue.length) this.#start();
    });
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      while (this.#queue[this.#head]?.state === CANCELLED) this.#head++;
      const head = this.#queue[this.#head];
      if (head === undefined) {
        this.#queue = [];
        this.#head = 0;
        return;
      }
      if (head.state === PENDING) {
        await this.#wait(Infinity, "events");
        continue;
      }
      const wait = this.#hurry ? 0 : head.at + this.#timings.batchMs - Date.now();
      if (wait > 0 && this.#queue.length - this.#head < MAX_BATCH_EVENTS) {
        await this.#wait(wait, "events");
        continue;
      }
      await this.#deliver(this.#take());
    }
  }

  /** Up to {@link MAX_BATCH_EVENTS} ready events from the head, stopping at a reserved place. */
  #take(): WebhookEvent[] {
    const batch: WebhookEvent[] = [];
    while (batch.length < MAX_BATCH_EVENTS && this.#head < this.#queue.length) {
      const entry = this.#queue[this.#head]!;
      if (entry.state === PENDING) break;
      this.#head++;
      if (entry.state === READY) batch.push(entry.event!);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return batch;
  }

  /**
   * POST one batch until a 2xx, retrying with exponential backoff and full jitter for
   * {@link WebhookTimings.retryWindowMs}, with one `X-Chorus-Delivery` id for every attempt.
   */
  async #deliver(events: WebhookEvent[]): Promise<void> {
    const t = this.#timings;
    const delivery = crypto.randomUUID();
    const body = JSON.stringify({ events });
    const first = Date.now();
    let failure: string | undefined;
    for (let attempt = 0;; attempt++) {
      const now = Date.now();
      if (this.#stopped || (attempt > 0 && this.#deadline !== undefined && now >= this.#deadline)) {
        // Shutting down: drain() counts what is still queued; these are lost with them.
        this.#row[C.webhookDropped]! += events.length;
        this.#options.log.warn("webhook events not delivered before shutdown", {
          count: events.length,
          delivery,
          error: failure,
        });
        return this.#settled(events.length);
      }
      if (attempt > 0) this.#row[C.webhookRetries]!++;
      failure = await this.#attempt(body, delivery);
      if (failure === undefined) {
        this.#row[C.webhookDelivered]! += events.length;
        return this.#settled(events.length);
      }
      if (Date.now() - first >= t.retryWindowMs) {
        this.#row[C.webhookGivenUp]! += events.length;
        this.#givenUp.note({ delivery, attempts: attempt + 1, error: failure }, events.length);
        return this.#settled(events.length);
      }
      this.#failing.note({ delivery, attempt: attempt + 1, error: failure });
      await this.#wait(this.#random() * retryBound(attempt, t), "retry");
    }
  }

  /** One attempt: undefined on a 2xx, else what went wrong (for the log). */
  async #attempt(body: string, delivery: string): Promise<string | undefined> {
    const remaining = this.#deadline === undefined ? Infinity : this.#deadline - Date.now();
    try {
      const answer = await this.#post({
        url: this.#options.url,
        key: this.#options.key,
        body,
        timeoutMs: Math.max(1, Math.min(this.#options.timeoutMs, remaining)),
        headers: { "x-chorus-delivery": delivery },
      });
      return answer.status >= 200 && answer.status < 300 ? undefined : `status ${answer.status}`;
    } catch (err) {
      if (!(err instanceof HookError)) throw err;
      return `${err.kind}: ${err.message}`;
    }
  }

  #settled(count: number): void {
    this.#size -= count;
    this.#gauge();
  }

  /** Sleep `ms` (Infinity: until woken); {@link #wake} with the same kind ends it early. */
  #wait(ms: number, kind: Sleep["kind"]): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const wake = () => {
        clearTimeout(timer);
        this.#sleep = undefined;
        resolve();
      };
      this.#sleep = { kind, wake };
      if (ms !== Infinity) timer = setTimeout(wake, ms);
    });
  }

  #wake(kind: Sleep["kind"]): void {
    if (this.#sleep?.kind === kind) this.#sleep.wake();
  }
}
