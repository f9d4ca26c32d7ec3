/**
 * Room and member events for webhooks, from what a hub sees: `member.joined` / `member.left`
 * for its own members, `message` for what was published through it, and the room's
 * transitions, `room.occupied` (first member anywhere) and `room.vacated` (last member gone,
 * and nobody back within `--webhook-vacate-delay`).
 *
 * Every hub of a cluster sees every transition in its presence view, which counts the other
 * hubs' members; an {@link Occupancy} decides which one hub sends it: this one alone
 * ({@link EVERY_ROOM}), the worker that owns the room ({@link ownedRooms}), or the instance
 * that wins an atomic claim in Redis (`RedisBus.claimRoom`). Each hub remembers what it believes
 * the application was last told of a room and claims only a change of it, so a leave and a
 * rejoin within the delay send nothing, and a claim that fails is retried.
 * @module
 */
import type { DisconnectReason } from "./metrics.ts";
import type { Member } from "./hub.ts";
import type { Logger } from "./log.ts";
import type { MessageEvent } from "./protocol.ts";
import type { Appended } from "./store.ts";
import type { Reservation, WebhookEvent, Webhooks } from "./webhooks.ts";
import { WarnWindow } from "./warn_window.ts";

/** What a room is, for the application: someone is in it, or nobody (for long enough). */
export type RoomState = "occupied" | "vacant";

/**
 * Decides which hub of a cluster tells the application that a room became `state`: each hub
 * that sees the change asks, and exactly one must be answered true. A promise that rejects
 * means "could not decide now"; the hub asks again later.
 */
export interface Occupancy {
  claimRoom(room: string, state: RoomState): boolean | Promise<boolean>;
}

/** A hub alone (no bus): it sends every transition it sees. */
export const EVERY_ROOM: Occupancy = Object.freeze({ claimRoom: () => true });

/**
 * The worker of `--workers` that sends a room's transitions: the one whose index is the room
 * name's FNV-1a hash modulo the number of workers. Workers share one presence view, so the
 * owner sees every transition; a replacement after a crash has the same index, and so the same
 * rooms.
 */
export function ownedRooms(index: number, workers: number): Occupancy {
  return { claimRoom: (room) => roomOwner(room, workers) === index };
}

/** The index of the worker that owns `room` among `workers` (FNV-1a of its UTF-16 units). */
export function roomOwner(room: string, workers: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < room.length; i++) h = Math.imul(h ^ room.charCodeAt(i), 0x01000193);
  return (h >>> 0) % workers;
}

/** What a hub tells about its rooms and members; see {@link RoomEvents}. */
export interface HubObserver {
  /** A member of this hub is in its room (presence counts it). */
  joined(member: Member): void;
  /** A member of this hub left its room; `occupied`: whether anyone is still in it anywhere. */
  left(member: Member, reason: DisconnectReason, occupied: boolean): void;
  /** Members of another hub came or went in `room`; `occupied` as for {@link left}. */
  presence(room: string, occupied: boolean): void;
  /** Set when published messages are wanted: one published through this hub was stored. */
  readonly stored?: ((room: string, event: MessageEvent, result: Appended) => void) | undefined;
}

/** Least time between two attempts of a transition whose claim failed (Redis unreachable). */
export const CLAIM_RETRY_MS = 1000;

/** What {@link RoomEvents} needs. */
export interface RoomEventsOptions {
  /** Where events go; only the types it {@link Webhooks.wants} are built. */
  sink: Pick<Webhooks, "wants" | "push" | "reserve">;
  occupancy: Occupancy;
  /** `--webhook-vacate-delay`, in ms. */
  vacateDelayMs: number;
  log: Logger;
  /** Clock of the events' `ts`. */
  now?: (() => number) | undefined;
  /** See {@link CLAIM_RETRY_MS}. */
  claimRetryMs?: number | undefined;
  /** Least time between two warn lines about failed claims. */
  warnIntervalMs?: number | undefined;
}

/** What this hub knows of a room that is occupied, or was, or is being decided. */
interface Room {
  /** Whether anyone is in it, by this hub's presence view. */
  occupied: boolean;
  /** What this hub believes the application was last told, by whichever hub. */
  told: RoomState;
  /** Counting down `--webhook-vacate-delay`. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** A claim waiting for its answer: the room is settled again after it. */
  claiming: Promise<void> | undefined;
  /** The state that claim is for. */
  claimingState: RoomState | undefined;
  /**
   * A place kept for the `room.occupied` that may follow the vacancy being claimed, taken when
   * a member joined meanwhile, so that its `member.joined` comes after it.
   */
  held: Reservation | undefined;
  /** A claim failed: the room is settled again when this fires. */
  retry: ReturnType<typeof setTimeout> | undefined;
}

/** Turns a hub's presence changes and messages into webhook events; see the module doc. */
export class RoomEvents implements HubObserver {
  readonly #sink: RoomEventsOptions["sink"];
  readonly #occupancy: Occupancy;
  /** `--webhook-vacate-delay`; 0 once a shutdown {@link hurry}s. */
  #delayMs: number;
  readonly #now: () => number;
  readonly #retryMs: number;
  readonly #rooms = new Map<string, Room>();
  /** Whether either transition is sent; without, rooms are not even tracked. */
  readonly #transitions: boolean;
  readonly #members: boolean;
  readonly #claimFailed: WarnWindow;
  #closed = false;
  readonly stored: HubObserver["stored"];

  constructor(options: RoomEventsOptions) {
    const sink = options.sink;
    this.#sink = sink;
    this.#occupancy = options.occupancy;
    this.#delayMs = options.vacateDelayMs;
    this.#now = options.now ?? Date.now;
    this.#retryMs = options.claimRetryMs ?? CLAIM_RETRY_MS;
    this.#transitions = sink.wants("room.occupied") || sink.wants("room.vacated");
    this.#members = sink.wants("member.joined") || sink.wants("member.left");
    this.#claimFailed = new WarnWindow(
      options.log,
      "room claim failed, retrying",
      options.warnIntervalMs ?? 10_000,
    );
    this.stored = sink.wants("message")
      ? (room, event, result) => this.#message(room, event, result)
      : undefined;
  }

  joined(member: Member): void {
    this.presence(member.room, true);
    const r = this.#rooms.get(member.room);
    if (r?.claimingState === "vacant" && r.held === undefined) r.held = this.#sink.reserve();
    if (this.#members) this.#sink.push(this.#member("member.joined", member));
  }

  left(member: Member, reason: DisconnectReason, occupied: boolean): void {
    if (this.#members) this.#sink.push({ ...this.#member("member.left", member), reason });
    this.presence(member.room, occupied);
  }

  presence(room: string, occupied: boolean): void {
    if (!this.#transitions || this.#closed) return;
    let r = this.#rooms.get(room);
    if (r === undefined) {
      if (!occupied) return;
      r = {
        occupied,
        told: "vacant",
        timer: undefined,
        claiming: undefined,
        claimingState: undefined,
        held: undefined,
        retry: undefined,
      };
      this.#rooms.set(room, r);
    }
    r.occupied = occupied;
    this.#settle(room, r);
  }

  /**
   * A shutdown begins: this hub will not be there when a vacate delay ends, so from now on a
   * room that empties is claimed vacant at once, and so are those counting down their delay.
   */
  hurry(): void {
    this.#delayMs = 0;
    for (const [room, r] of this.#rooms) {
      if (r.timer === undefined) continue;
      clearTimeout(r.timer);
      r.timer = undefined;
      this.#settle(room, r);
    }
  }

  /**
   * At shutdown, after {@link hurry} and once the hub's members have left: claim at once what
   * is still waiting (a claim to retry), wait for pending claims until `deadline` (ms since the
   * epoch), then ignore any further change.
   */
  async close(deadline: number): Promise<void> {
    const pending: Promise<void>[] = [];
    for (const [room, r] of this.#rooms) {
      clearTimeout(r.timer);
      clearTimeout(r.retry);
      r.timer = r.retry = undefined;
      if (r.claiming === undefined && r.occupied !== (r.told === "occupied")) {
        this.#claim(room, r, r.occupied ? "occupied" : "vacant");
      }
      if (r.claiming) pending.push(r.claiming);
    }
    this.#closed = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((r) =>
      timer = setTimeout(r, Math.max(0, deadline - Date.now()))
    );
    await Promise.race([Promise.all(pending), late]);
    clearTimeout(timer);
    for (const r of this.#rooms.values()) {
      clearTimeout(r.retry);
      r.held?.cancel(); // its claim will not be retried: the queue must not wait for it
      r.held = undefined;
    }
    this.#claimFailed.flush();
  }

  /** Bring what the application was told in line with the view, as far as a claim allows. */
  #settle(room: string, r: Room): void {
    if (r.claiming || r.retry || this.#closed) return;
    if (r.occupied) {
      clearTimeout(r.timer);
      r.timer = undefined;
      if (r.told === "vacant") return this.#claim(room, r, "occupied");
    }
    r.held?.cancel(); // no occupied claim follows
    r.held = undefined;
    if (r.occupied) return;
    if (r.told === "occupied") {
      if (r.timer !== undefined) return;
      if (this.#delayMs <= 0) return this.#claim(room, r, "vacant");
      r.timer = setTimeout(() => {
        r.timer = undefined;
        if (!r.occupied) this.#claim(room, r, "vacant");
      }, this.#delayMs);
    } else {
      this.#rooms.delete(room);
    }
  }

  /**
   * Ask whether this hub sends `room`'s change to `state`; an answer that takes time keeps the
   * event's place in the queue, so the room's later events stay behind it.
   */
  #claim(room: string, r: Room, state: RoomState): void {
    const held = r.held;
    r.held = undefined;
    const claim = this.#occupancy.claimRoom(room, state);
    if (!(claim instanceof Promise)) return this.#claimed(room, r, state, claim, held);
    const place = held ?? this.#sink.reserve();
    r.claimingState = state;
    r.claiming = claim.then(
      (won) => {
        r.claiming = r.claimingState = undefined;
        this.#claimed(room, r, state, won, place);
      },
      (err: unknown) => {
        r.claiming = r.claimingState = undefined;
        place.cancel();
        // Not held while failing (Redis down): the whole queue would wait behind it.
        r.held?.cancel();
        r.held = undefined;
        if (!(err instanceof Error)) throw err;
        this.#claimFailed.note({ room, state, error: err.message });
        if (this.#closed) return;
        // Asked again later, from the view of then: the room may have changed back meanwhile.
        r.retry = setTimeout(() => {
          r.retry = undefined;
          this.#settle(room, r);
        }, this.#retryMs);
      },
    );
  }

  /** The claim's answer: `won` sends the event; either way the application now knows `state`. */
  #claimed(
    room: string,
    r: Room,
    state: RoomState,
    won: boolean,
    place: Reservation | undefined,
  ): void {
    r.told = state;
    const type = state === "occupied" ? "room.occupied" : "room.vacated";
    if (won && this.#sink.wants(type)) {
      const event: WebhookEvent = { type, room, ts: this.#now() };
      if (place) place.fill(event);
      else this.#sink.push(event);
    } else place?.cancel();
    this.#settle(room, r);
  }

  #member(type: "member.joined" | "member.left", member: Member): WebhookEvent {
    return {
      type,
      room: member.room,
      ts: this.#now(),
      id: member.id,
      name: member.name,
      transport: member.transport ?? "websocket",
      mode: member.mode,
      ...(member.sub === undefined ? {} : { sub: member.sub }),
    };
  }

  #message(room: string, event: MessageEvent, result: Appended): void {
    this.#sink.push({
      type: "message",
      room,
      ts: event.ts,
      id: event.id,
      offset: result?.offset ?? null,
      from: event.from,
      text: event.text,
    });
  }
}
