/**
 * Crowds: rooms with more members than `--presence-limit`. Full presence (a `join` or `leave`
 * to every member per member, and every member in each `welcome`) costs a room of N members
 * N² events, so above the limit a room is told its member count instead: one `presence` event
 * per `--presence-interval` at most, and only when the count changed. When a crowd shrinks back
 * to the limit, its members get the whole list once (a `members` event) and per-member events
 * resume. This module decides which; it sends nothing itself, so it is tested without sockets.
 * @module
 */

/** What {@link Crowds} is built from. */
export interface CrowdsOptions {
  /** Members a room may have and still get per-member presence (`--presence-limit`). */
  limit: number;
  /** Shortest time between two `presence` events of one room (`--presence-interval`), in ms. */
  intervalMs: number;
  /** The room's member count right now, on every hub. */
  count(room: string): number;
  /** A crowd's count changed (or the room just became a crowd): tell its members `count`. */
  onCount(room: string, count: number): void;
  /** A crowd shrank to the limit: send its members the whole list; per-member events resume. */
  onSmall(room: string, count: number): void;
}

interface Crowd {
  /** The count its members were last told; -1 before the first `presence` event. */
  told: number;
  /** When they were told, in ms (`performance.now()`). */
  toldAt: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** The rooms of one hub that are over the presence limit, and their pending counts. */
export class Crowds {
  readonly #options: CrowdsOptions;
  readonly #crowds = new Map<string, Crowd>();

  constructor(options: CrowdsOptions) {
    this.#options = options;
  }

  /** Whether `room` is a crowd: its members get counts, not per-member events. */
  has(room: string): boolean {
    return this.#crowds.has(room);
  }

  /**
   * A member joined or left `room` (here or on another hub). Returns whether the change is to
   * be announced member by member, as in a small room; otherwise the count is told later.
   * A room becomes a crowd at once when it passes the limit, and its members are told so on
   * this turn, but it becomes small again only on its next count, so that a room hovering
   * at the limit costs at most one full list per interval.
   */
  changed(room: string): boolean {
    const crowd = this.#crowds.get(room);
    if (crowd !== undefined) {
      this.#schedule(room, crowd);
      return false;
    }
    if (this.#options.count(room) <= this.#options.limit) return true;
    const fresh: Crowd = { told: -1, toldAt: -Infinity, timer: undefined };
    this.#crowds.set(room, fresh);
    this.#schedule(room, fresh);
    return false;
  }

  /** Stop every pending count; nothing more is told. */
  dispose(): void {
    for (const crowd of this.#crowds.values()) clearTimeout(crowd.timer);
    this.#crowds.clear();
  }

  /** Tell the crowd its count now if it has not been told for an interval, else then. */
  #schedule(room: string, crowd: Crowd): void {
    if (crowd.timer !== undefined) return;
    const wait = crowd.toldAt + this.#options.intervalMs - performance.now();
    if (wait <= 0) return this.#tell(room, crowd);
    crowd.timer = setTimeout(() => {
      crowd.timer = undefined;
      this.#tell(room, crowd);
    }, wait);
  }

  #tell(room: string, crowd: Crowd): void {
    const count = this.#options.count(room);
    if (count <= this.#options.limit) {
      this.#crowds.delete(room);
      this.#options.onSmall(room, count);
      return;
    }
    if (count === crowd.told) return;
    crowd.told = count;
    crowd.toldAt = performance.now();
    this.#options.onCount(room, count);
  }
}
