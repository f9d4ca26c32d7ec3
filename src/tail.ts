/**
 * A hub's view of the end of one room's stream, kept while the room has members on the hub:
 * where the hub's delivery stands (epoch and offset), the last `--history` messages for the
 * `welcome`s of newcomers, and the messages that came in ahead of a gap. The store hands a
 * hub each room's messages in order; this is where "in order" is made true whatever the
 * transport did (a subscription that started mid-stream, a message lost while Redis
 * reconnected): a message is delivered here only right after the one before it.
 * @module
 */
import type { MessageEvent } from "./protocol.ts";
import type { StreamPage } from "./store.ts";

/** Where a client asks to resume: after a message id, or after an offset of an epoch. */
export type Resume = { since: string } | { epoch: string; offset: number };

/** Missing offsets a tail waits for: every offset after `after`, up to `before` (exclusive). */
export interface Gap {
  after: number;
  before: number;
}

/** Messages held back at most, ahead of a gap; beyond it the oldest gap is given up on. */
const MAX_HELD = 10_000;

/** The end of one room's stream, as one hub delivers it. */
export class Tail {
  /** The epoch of the stream being delivered; "" until loaded. */
  epoch = "";
  /** The offset of the last message delivered (or of the stream's end when loaded). */
  head = 0;
  /** The oldest offset the store still keeps, as last read. */
  first = 1;
  /** See {@link StreamPage.lost}. */
  lost = 0;
  /** Whether the store's page has been loaded; messages are held until then. */
  loaded = false;
  /** Set while the hub reads a gap from the store, so it reads one at a time. */
  filling = false;
  /** The last messages delivered, oldest first, at most {@link size}. */
  readonly recent: MessageEvent[] = [];
  readonly #held = new Map<number, MessageEvent>();

  /** `size` is `--history`: how many recent messages a welcome carries. */
  constructor(readonly size: number) {}

  /**
   * Start from a page of the store (`{last: size}`). Returns the held messages that follow
   * it without a gap, to deliver now.
   */
  load(page: StreamPage): MessageEvent[] {
    this.loaded = true;
    this.epoch = page.epoch;
    this.head = page.offset;
    this.first = page.first;
    this.lost = page.lost;
    this.recent.length = 0;
    for (const m of page.messages) this.#remember(m);
    for (const offset of this.#held.keys()) if (offset <= this.head) this.#held.delete(offset);
    return this.#drain();
  }

  /**
   * A stored message of this room, in whatever order it came: the messages to deliver now, in
   * order (none when it is a duplicate or comes after a gap, which {@link gap} then names).
   */
  accept(epoch: string, event: MessageEvent): MessageEvent[] {
    const offset = event.offset!;
    if (!this.loaded) {
      this.#hold(event);
      return [];
    }
    if (epoch !== this.epoch) {
      // The stream started over (wiped, or expired whole): follow the new one from here.
      this.epoch = epoch;
      this.head = offset - 1;
      this.first = offset;
      this.lost = 0;
      this.recent.length = 0;
      this.#held.clear();
    }
    if (offset <= this.head) return [];
    this.#hold(event);
    return this.#drain();
  }

  /** Offsets missing before the held messages, to read from the store; none when none held. */
  gap(): Gap | undefined {
    if (!this.loaded || this.#held.size === 0) return undefined;
    return { after: this.head, before: Math.min(...this.#held.keys()) };
  }

  /**
   * The store answered a gap read: deliver what it returned and what then follows. Offsets the
   * store no longer keeps are skipped, so delivery never waits forever.
   */
  fill(page: StreamPage, gap: Gap): MessageEvent[] {
    if (page.epoch !== this.epoch || this.head !== gap.after) return [];
    for (const m of page.messages) if (m.offset! > this.head) this.#hold(m);
    const out = this.#drain();
    if (this.head < gap.before - 1 && page.messages.length === 0) {
      this.head = gap.before - 1; // trimmed meanwhile: there is nothing to wait for
      out.push(...this.#drain());
    }
    return out;
  }

  /** The recent message with this id, if it is still among the recent ones. */
  find(id: string): MessageEvent | undefined {
    return this.recent.find((m) => m.id === id);
  }

  /** The offset after which {@link recent} is complete: everything later is in it. */
  get recentAfter(): number {
    return this.recent.length === 0 ? this.head : this.recent[0]!.offset! - 1;
  }

  #hold(event: MessageEvent): void {
    this.#held.set(event.offset!, event);
    if (this.#held.size <= MAX_HELD) return;
    // Far too much ahead of a gap: give the gap up rather than hold the room forever.
    this.head = Math.min(...this.#held.keys()) - 1;
  }

  /** Take the held messages that follow the head without a gap. */
  #drain(): MessageEvent[] {
    const out: MessageEvent[] = [];
    for (;;) {
      const next = this.#held.get(this.head + 1);
      if (next === undefined) return out;
      this.#held.delete(this.head + 1);
      this.head++;
      this.#remember(next);
      out.push(next);
    }
  }

  #remember(event: MessageEvent): void {
    if (this.size === 0) return;
    this.recent.push(event);
    if (this.recent.length > this.size) this.recent.shift();
    this.head = Math.max(this.head, event.offset!);
  }
}
