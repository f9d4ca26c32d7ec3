/**
 * The streams a hub follows: for each room with members on the hub, a {@link Tail} loaded from
 * the store, fed with what the store hands back, and its gaps read back from the store, so the
 * hub delivers each room's messages once and in offset order. It also works out what a joining
 * member gets: the latest messages, or everything after the position it resumes from.
 * @module
 */
import type { MessageEvent } from "./protocol.ts";
import type { StreamPage, StreamStore } from "./store.ts";
import { type Resume, Tail } from "./tail.ts";

/** Messages one store read asks for while a gap is collected. */
export const RESUME_READ = 1000;

/** Unnumbered message ids remembered, so a late numbered copy of one is not delivered again. */
const MAX_UNNUMBERED = 1000;

/** What a joining member gets: every kept message after `after`, and whether that is all. */
export interface Recovery {
  after: number;
  events: MessageEvent[];
  recovered: boolean;
}

/** What {@link RoomStreams} needs from its hub. */
export interface RoomStreamsOptions {
  store: StreamStore;
  /** `--history`: how many recent messages a tail keeps for welcomes. */
  historySize: number;
  /** Deliver a message to the hub's members of a room, in order. */
  deliver(room: string, event: MessageEvent): void;
}

/** The tails of one hub's rooms. */
export class RoomStreams {
  readonly #store: StreamStore;
  readonly #historySize: number;
  readonly #deliver: RoomStreamsOptions["deliver"];
  readonly #tails = new Map<string, Tail>();
  /** Tails whose first page the store has not answered yet. */
  readonly #loads = new Map<Tail, Promise<void>>();
  /** Ids of the latest messages delivered unnumbered (see {@link stored}). */
  readonly #unnumbered = new Set<string>();

  constructor(options: RoomStreamsOptions) {
    this.#store = options.store;
    this.#historySize = options.historySize;
    this.#deliver = options.deliver;
  }

  /** The tail of a room, made and loaded from the store for its first member here. */
  tailOf(room: string): Tail {
    const tail = this.#tails.get(room);
    if (tail) return tail;
    const made = new Tail(this.#historySize);
    this.#tails.set(room, made);
    let page: StreamPage | Promise<StreamPage>;
    try {
      page = this.#store.read(room, { last: Math.max(1, this.#historySize) });
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      page = Promise.reject(err);
    }
    const load = (p: StreamPage) => {
      if (this.#tails.get(room) !== made) return;
      for (const m of made.load(p)) this.#out(room, m);
      this.#fill(room, made);
    };
    if (!(page instanceof Promise)) load(page);
    else {
      const loading = page.then(load, (err: unknown) => {
        if (!(err instanceof Error)) throw err;
        // The store cannot be read (Redis down): start from nothing, nobody is recovered.
        load({ epoch: "", offset: 0, first: 1, lost: 0, messages: [] });
      }).finally(() => this.#loads.delete(made));
      this.#loads.set(made, loading);
    }
    return made;
  }

  /** The latest offset delivered of a room whose tail is loaded; undefined otherwise. */
  head(room: string): number | undefined {
    const tail = this.#tails.get(room);
    return tail?.loaded ? tail.head : undefined;
  }

  /** Resolves once a tail is loaded; undefined when it already is. */
  loading(tail: Tail): Promise<void> | undefined {
    return this.#loads.get(tail);
  }

  /** Nobody is in a room here any more, nor joining: stop following its stream. */
  forget(room: string): void {
    const tail = this.#tails.get(room);
    if (tail) this.#loads.delete(tail);
    this.#tails.delete(room);
  }

  /** A message the store handed back: delivered in its room's order, once. */
  stored(room: string, epoch: string, event: MessageEvent): void {
    if (event.offset === undefined) {
      // Not stored (a full disk, the backplane down or hung): delivered at once, outside the
      // order. A hung backplane may number it later: that copy is not delivered again.
      this.#unnumbered.add(event.id);
      if (this.#unnumbered.size > MAX_UNNUMBERED) {
        this.#unnumbered.delete(this.#unnumbered.values().next().value!);
      }
      return this.#deliver(room, event);
    }
    const tail = this.#tails.get(room);
    if (tail === undefined) return;
    for (const m of tail.accept(epoch, event)) this.#out(room, m);
    this.#fill(room, tail);
  }

  /** The bus reconnected: messages may have been missed meanwhile; read them for every room. */
  catchUp(): void {
    for (const [room, tail] of this.#tails) {
      if (this.#loads.has(tail) || tail.filling) continue;
      tail.filling = true;
      void Promise.resolve(this.#store.read(room, { after: tail.head, limit: RESUME_READ }))
        .then((page) => {
          tail.filling = false;
          if (this.#tails.get(room) !== tail) return;
          for (const m of page.messages) {
            for (const d of tail.accept(page.epoch, m)) this.#out(room, d);
          }
          this.#fill(room, tail);
        }, (err: unknown) => {
          if (!(err instanceof Error)) throw err;
          tail.filling = false;
        });
    }
  }

  /**
   * What a member gets on joining: the last `--history` messages, or everything after the
   * position it resumes from, read from the store when it reaches back past the tail.
   */
  recover(room: string, tail: Tail, resume: Resume | undefined): Recovery | Promise<Recovery> {
    const latest = { after: tail.recentAfter, events: tail.recent.slice(), recovered: true };
    if (resume === undefined) return latest;
    let from: number;
    if ("since" in resume) {
      const seen = tail.find(resume.since);
      if (seen === undefined) return { ...latest, recovered: false };
      from = seen.offset!;
    } else {
      if (resume.epoch !== tail.epoch || resume.offset > tail.head) {
        return { ...latest, recovered: false };
      }
      from = resume.offset;
    }
    const recovered = tail.lost === 0 || from > tail.lost;
    if (from >= tail.recentAfter) {
      return { after: from, events: tail.recent.filter((m) => m.offset! > from), recovered };
    }
    return this.#collect(room, tail, from, recovered);
  }

  /** Read a resuming member's gap from the store, up to where the tail's recent messages start. */
  async #collect(room: string, tail: Tail, from: number, recovered: boolean): Promise<Recovery> {
    const events: MessageEvent[] = [];
    let after = from;
    let cursor = from;
    while (cursor < tail.recentAfter) {
      let page: StreamPage;
      try {
        page = await this.#store.read(room, { after: cursor, limit: RESUME_READ });
      } catch (err) {
        if (!(err instanceof Error)) throw err;
        return { after: tail.recentAfter, events: tail.recent.slice(), recovered: false };
      }
      if (page.epoch !== tail.epoch) {
        return { after: tail.recentAfter, events: tail.recent.slice(), recovered: false };
      }
      if (cursor === from && page.first > from + 1) {
        // Trimmed: what is kept resumes at the oldest kept message.
        recovered = false;
        after = page.first - 1;
      }
      if (page.messages.length === 0) break;
      events.push(...page.messages);
      cursor = page.messages.at(-1)!.offset!;
    }
    return { after, events, recovered };
  }

  /** A tail holds messages ahead of a gap: read the gap from the store, once at a time. */
  #fill(room: string, tail: Tail): void {
    const gap = tail.gap();
    if (gap === undefined || tail.filling) return;
    tail.filling = true;
    const done = (page: StreamPage) => {
      tail.filling = false;
      if (this.#tails.get(room) !== tail) return;
      for (const m of tail.fill(page, gap)) this.#out(room, m);
      this.#fill(room, tail);
    };
    const page = this.#store.read(room, { after: gap.after, limit: gap.before - gap.after - 1 });
    if (!(page instanceof Promise)) return done(page);
    page.then(done, (err: unknown) => {
      if (!(err instanceof Error)) throw err;
      tail.filling = false; // tried again with the next message that comes in
    });
  }

  /** Deliver a numbered message, unless it already went out unnumbered. */
  #out(room: string, event: MessageEvent): void {
    if (this.#unnumbered.size > 0 && this.#unnumbered.delete(event.id)) return;
    this.#deliver(room, event);
  }
}
