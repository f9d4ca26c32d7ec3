/**
 * Which rooms a hub asks its bus to carry. A bus that carries only watched rooms (Redis) is
 * asked for a room when its first member here connects, and told to let it go when the last
 * one leaves; until the bus has the room (subscribed, stored history loaded) the room is not
 * ready, and joins wait for it.
 * @module
 */
import type { Bus } from "./bus.ts";

/** The watched rooms of one hub, counted by member. */
export class RoomWatches {
  readonly #bus: Bus | undefined;
  /** Members (joined or not) per room. */
  readonly #members = new Map<string, number>();
  /** Rooms whose {@link Bus.watch} has not resolved yet. */
  readonly #preparing = new Map<string, Promise<void>>();

  /** With no bus, or one that carries every room, rooms are counted but never waited for. */
  constructor(bus: Bus | undefined) {
    this.#bus = bus?.watch ? bus : undefined;
  }

  /** Whether a member of `room` is connected here, joined or not. */
  has(room: string): boolean {
    return this.#members.has(room);
  }

  /**
   * Resolves once the bus carries `room` to this hub; undefined when there is nothing to wait
   * for. Never rejects.
   */
  ready(room: string): Promise<void> | undefined {
    return this.#preparing.get(room);
  }

  /** Count a member of `room`; the first asks the bus for the room. */
  watch(room: string): void {
    const n = this.#members.get(room) ?? 0;
    this.#members.set(room, n + 1);
    if (n > 0 || !this.#bus) return;
    const done = this.#bus.watch!(room).finally(() => {
      if (this.#preparing.get(room) === done) this.#preparing.delete(room);
    });
    this.#preparing.set(room, done);
  }

  /** Uncount a member of `room`; when none is left, the bus may stop carrying it. */
  unwatch(room: string): void {
    const n = this.#members.get(room);
    if (n === undefined) return;
    if (n > 1) {
      this.#members.set(room, n - 1);
      return;
    }
    this.#members.delete(room);
    this.#preparing.delete(room);
    this.#bus?.unwatch?.(room);
  }
}
