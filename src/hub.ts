/**
 * Rooms and fan-out. A room is two `Set`s of peers (raw and `chorus.v1`); the hub relays every
 * message to the peers of its room that are open, through one publish path, and drops a room
 * the moment its last member leaves. It composes the parts that hold the rest: who is where
 * ({@link Presence}), what rooms said ({@link HistoryStore}), what is queued for whom
 * ({@link Outbox}) and the connection limits ({@link Slots}). Given a {@link Bus}, hubs of
 * several workers or instances act as one: each publishes what its members do and replays what
 * the others publish.
 * @module
 */
import type { Bus, BusMessage, RemoteMember } from "./bus.ts";
import { closeFrame, type DropReason } from "./close.ts";
import { Crowds } from "./crowds.ts";
import { type HistoryStore, MemoryHistory } from "./history.ts";
import { type Admission as LimitAdmission, ConnectionLimiter } from "./limiter.ts";
import { C, type DisconnectReason, Metrics, utf8Length } from "./metrics.ts";
import { Outbox } from "./outbox.ts";
import { type MemberPage, Presence, type PresenceChange, type Present } from "./presence.ts";
import {
  type MemberInfo,
  type MessageEvent,
  PRESENCE_SAMPLE,
  type ProtocolError,
  type ServerEvent,
} from "./protocol.ts";
import type { TokenBucket } from "./ratelimit.ts";
import { Slots } from "./slots.ts";
import { RoomWatches } from "./watches.ts";
import { CONNECTING, OPEN, type Peer } from "./transport.ts";

/** Whether a connection may be admitted, or why not. */
export type Admission = LimitAdmission | "shutting_down";

/** Options that shape a hub; all come from {@link Config} in production. */
export interface HubOptions {
  /** Chat messages kept per room; 0 disables history. */
  history: number;
  /** Milliseconds an empty room's history is kept. */
  historyTtlMs: number;
  /** Memory all rooms' histories may use together, in bytes (approximate). */
  historyMaxBytes?: number;
  /** A socket whose unsent queue passes this many bytes is closed as a slow consumer. */
  maxBufferedBytes?: number;
  /** Members a room may have and still get per-member presence; unlimited when omitted. */
  presenceLimit?: number | undefined;
  /** Shortest time between two member counts told to a room over the limit, in ms. */
  presenceIntervalMs?: number | undefined;
  /** Connection limits; unlimited when omitted. */
  limiter?: ConnectionLimiter;
  /** Counters to count into; a private set when omitted. */
  metrics?: Metrics;
  /** This hub's id on the bus, which the bus must know too; a random one when omitted. */
  node?: string;
  /** Other hubs of the same server, or of other instances; none for a single process. */
  bus?: Bus | undefined;
  /** Told about every connection the hub itself closes, e.g. to log it. */
  onDrop?: (member: Member, reason: DisconnectReason) => void;
  /** Clock in ms since the epoch; injectable so tests can expire history instantly. */
  now?: (() => number) | undefined;
}

/** One connection in one room. Created by its transport's adapter, owned by the hub. */
export interface Member extends Present {
  readonly room: string;
  readonly socket: Peer;
  /** Remote IP address, for the per-IP connection limit. */
  readonly ip: string;
  /** Set when the member's token fixes its name, so `rename` is refused. */
  readonly nameLocked: boolean;
  /** Messages this member may still send; see `--rate-limit`. */
  readonly bucket: TokenBucket;
  /** Called once when the member leaves the hub, whichever way: frees what its adapter holds. */
  ended?: () => void;
}

interface Room {
  readonly raw: Set<Peer>;
  readonly chat: Set<Peer>;
}

/** A fresh id for a hub on a bus; also the prefix of every id that hub hands out. */
export function newNodeId(): string {
  return crypto.randomUUID().slice(0, 6);
}

/**
 * How far back (ms) a recovery on a worker reaches for messages from other workers, which
 * the bus may have ordered differently there than on the worker the client saw them on.
 */
const REORDER_WINDOW_MS = 1000;

/** The state of every room of one server (or one worker of it). */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<Peer, Member>();
  readonly #presence = new Presence();
  readonly #crowds: Crowds;
  readonly #history: HistoryStore;
  readonly #outbox: Outbox;
  readonly #slots: Slots<Peer>;
  readonly #watches: RoomWatches;
  readonly #bus: Bus | undefined;
  readonly #onDrop: NonNullable<HubOptions["onDrop"]>;
  readonly #now: () => number;
  /** Counters of this hub, for `/metrics`. */
  readonly metrics: Metrics;
  /** This hub's id on the bus; also the prefix of every id it hands out. */
  readonly node: string;
  #seq = 0;
  /** Set by {@link closeAll}: no new connections from then on. */
  #shuttingDown = false;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: HubOptions) {
    this.metrics = options.metrics ?? new Metrics();
    this.node = options.node ?? newNodeId();
    this.#now = options.now ?? Date.now;
    this.#onDrop = options.onDrop ?? (() => {});
    this.#slots = new Slots(options.limiter ?? new ConnectionLimiter(Infinity, Infinity));
    this.#outbox = new Outbox({
      maxBufferedBytes: options.maxBufferedBytes ?? Infinity,
      metrics: this.metrics,
      onSlow: (peer) => this.drop(peer, "slow_consumer"),
      onBroken: (peer) => void this.leave(peer, "error"),
    });
    this.#history = new MemoryHistory({
      limit: options.history,
      ttlMs: options.historyTtlMs,
      maxBytes: options.historyMaxBytes ?? Infinity,
      occupied: (room) => this.#occupied(room),
      now: this.#now,
      reorderWindowMs: options.bus ? REORDER_WINDOW_MS : 0,
    });
    this.#crowds = new Crowds({
      limit: options.presenceLimit ?? Infinity,
      intervalMs: options.presenceIntervalMs ?? 1000,
      count: (room) => this.#presence.count(room),
      onCount: (room, count) => this.#tell(room, { type: "presence", count }),
      onSmall: (room, count) =>
        this.#tell(room, { type: "members", count, members: this.membersOf(room) }),
    });
    this.#bus = options.bus;
    this.#watches = new RoomWatches(options.bus);
    this.#bus?.subscribe((m) => this.#receive(m));
    this.#bus?.publish({ t: "sync", node: this.node });
    if (options.history > 0) {
      const timer = setInterval(
        () => this.sweepHistory(),
        Math.max(1000, Math.min(60_000, options.historyTtlMs)),
      );
      Deno.unrefTimer(timer);
      this.#sweepTimer = timer;
    }
  }

  /** This hub's connections, counted from the upgrade until they leave. */
  get connections(): number {
    return this.#members.size;
  }

  /** Connections of every hub on the bus (this one's alone without a bus). */
  get clusterConnections(): number {
    return this.#members.size + this.#presence.remoteMembers;
  }

  /** Rooms with at least one member on any hub of the bus. */
  get rooms(): number {
    return this.#presence.rooms;
  }

  /** Whether one more connection from `ip` fits under the connection limits; reserves it. */
  admit(ip: string): Admission {
    if (this.#shuttingDown) return "shutting_down";
    return this.#slots.acquire(ip);
  }

  /** Give back a slot {@link admit} reserved for a connection that never came to be. */
  release(ip: string): void {
    this.#slots.release(ip);
  }

  /**
   * Take over a just-upgraded connection admitted by {@link admit}, before it opens, so a
   * burst of upgrades cannot overshoot the limits. {@link leave} releases it.
   */
  connect(member: Member): void {
    this.#members.set(member.socket, member);
    this.metrics.row[member.mode === "raw" ? C.rawConnections : C.chatConnections]!++;
    this.#watches.watch(member.room);
  }

  /**
   * The member's connection opened: it joins its room, at once or, while the bus is making
   * the room ready (subscribing, loading stored history), once that is done. Returns the
   * promise of a join that waits; it never rejects.
   */
  open(member: Member, since?: string): Promise<void> | undefined {
    const ready = this.#watches.ready(member.room);
    if (ready === undefined) return this.#join(member, since);
    return ready.then(() => this.#join(member, since));
  }

  /** Whether a member is in its room (it opened, its room was ready, and it has not left). */
  joined(member: Member): boolean {
    return this.#presence.has(member.room, member);
  }

  /** The member of a peer, while it is in the hub. */
  memberOf(peer: Peer): Member | undefined {
    return this.#members.get(peer);
  }

  /** A fresh unique id, for members and messages alike. */
  nextId(): string {
    return `${this.node}-${(++this.#seq).toString(36)}`;
  }

  /** Members of a room on every hub, as members see them: this hub's first, in join order. */
  membersOf(room: string): MemberInfo[] {
    return this.#presence.members(room);
  }

  /** Every room with members on any hub of the bus, by room name, with its member count. */
  roomCounts(): Map<string, number> {
    return this.#presence.counts();
  }

  /**
   * One page of a room's members on every hub of the bus, ordered by id, after the id `after`
   * (see {@link Presence.page}), with the room's member count.
   */
  memberPage(
    room: string,
    after: string | undefined,
    limit: number,
  ): MemberPage & { count: number } {
    return { count: this.#presence.count(room), ...this.#presence.page(room, after, limit) };
  }

  /** Every room with members on any hub of the bus, by room name, with those members. */
  directory(): Map<string, RemoteMember[]> {
    return this.#presence.directory();
  }

  /**
   * Remove a peer from the hub at once. Safe to call more than once: a peer the server closed
   * may never report `close`, so it is removed when closed, and again if it does.
   */
  leave(peer: Peer, reason: DisconnectReason): Member | undefined {
    const member = this.#members.get(peer);
    if (!member) {
      this.#slots.released(peer);
      return undefined;
    }
    this.#members.delete(peer);
    this.#watches.unwatch(member.room);
    if (reason === "client" || reason === "idle" || reason === "shutdown") {
      this.#slots.release(member.ip);
    } else {
      this.#slots.hold(peer, member.ip);
    }
    this.metrics.row[member.mode === "raw" ? C.rawConnections : C.chatConnections]!--;
    this.metrics.disconnect(reason);
    member.ended?.();
    const room = this.#rooms.get(member.room);
    const left = this.#presence.leave(member.room, member);
    if (!room || !left) return member;
    this.#outbox.forget(peer, room.chat);
    (member.mode === "raw" ? room.raw : room.chat).delete(peer);
    if (room.raw.size === 0 && room.chat.size === 0) this.#rooms.delete(member.room);
    if (this.#crowds.changed(member.room)) this.#announce(room, left);
    this.#markIfEmpty(member.room);
    this.#bus?.publish({ t: "leave", node: this.node, room: member.room, id: member.id });
    return member;
  }

  /**
   * Broadcast to a room on every hub of the bus: text as a chat `message` from `from` (to raw
   * peers as the text itself, to chat peers as the event, and into history), bytes to raw
   * peers only. Every message takes this path: a member's, a raw frame, the publish API's.
   * Returns how many peers of this hub it was sent to.
   */
  publish(room: string, data: string | ArrayBuffer, from: MemberInfo): number {
    const r = this.#rooms.get(room);
    if (typeof data !== "string") {
      if (r) this.#outbox.sendAll(r.raw, data, data.byteLength);
      this.#bus?.publish({ t: "binary", node: this.node, room, data: new Uint8Array(data) });
      return r?.raw.size ?? 0;
    }
    const delivered = r ? r.raw.size + r.chat.size : 0;
    const event: MessageEvent = {
      type: "message",
      id: this.nextId(),
      from: { id: from.id, name: from.name },
      text: data,
      ts: this.#now(),
    };
    this.#deliver(room, event);
    this.#bus?.publish({ t: "message", node: this.node, room, event });
    return delivered;
  }

  /**
   * Change a member's display name and tell everyone in the room, the renamer included; in a
   * room over the presence limit, the renamer alone.
   */
  rename(member: Member, name: string): void {
    const change = this.#presence.rename(member, name);
    const room = this.#rooms.get(member.room);
    if (room && this.#crowds.has(member.room)) this.#queue(member, room, change);
    else if (room) this.#announce(room, change);
    const { id, oldName } = change;
    this.#bus?.publish({ t: "rename", node: this.node, room: member.room, id, name, oldName });
  }

  /** Tell one chat member what was wrong with its frame. */
  reject(member: Member, error: ProtocolError): void {
    const room = this.#rooms.get(member.room);
    if (room && this.joined(member)) this.#queue(member, room, error);
  }

  /**
   * Close a peer on the server's initiative, with the close frame of `why`, and remove it at
   * once: its transport may never report `close`, and nothing more may be queued for it.
   */
  drop(peer: Peer, why: DropReason): void {
    const member = this.leave(peer, why);
    const { code, reason } = closeFrame(why);
    if (peer.readyState === OPEN || peer.readyState === CONNECTING) peer.close(code, reason);
    if (member) this.#onDrop(member, why);
  }

  /**
   * Close every peer, those still connecting included, emptying the hub at once. Resolves
   * when every peer reports closed, or after `timeoutMs` (a peer the server closed may never
   * report it), so a shutdown neither hangs nor cuts close frames short.
   */
  closeAll(timeoutMs = 2000): Promise<void> {
    this.#shuttingDown = true;
    this.flush();
    const { code, reason } = closeFrame("shutdown");
    const closed: Promise<void>[] = [];
    for (const peer of [...this.#members.keys()]) {
      this.leave(peer, "shutdown");
      if (peer.readyState === OPEN || peer.readyState === CONNECTING) {
        closed.push(new Promise((resolve) => peer.addEventListener("close", () => resolve())));
        peer.close(code, reason);
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs));
    return Promise.race([Promise.all(closed).then(() => {}), timeout])
      .finally(() => clearTimeout(timer));
  }

  /**
   * Stop background timers and leave the bus; the hub must not be used afterwards. Resolves
   * when the bus has sent the goodbye.
   */
  async dispose(): Promise<void> {
    clearInterval(this.#sweepTimer);
    this.#outbox.dispose();
    this.#crowds.dispose();
    this.#slots.releaseAll();
    this.#bus?.publish({ t: "bye", node: this.node });
    await this.#bus?.close();
  }

  /** Drop histories of rooms that have been empty for longer than the TTL. */
  sweepHistory(): void {
    this.#history.expire();
  }

  /** Write every queued chat event now (see {@link Outbox.flush}). */
  flush(): void {
    this.#outbox.flush();
  }

  /**
   * Add an opened member to its room. A chat member first gets `welcome` (with the messages
   * after `since`, when given), then everyone else in the room hears `join`, unless the room
   * is over the presence limit: then the welcome lists a sample and the join is only counted.
   */
  #join(member: Member, since: string | undefined): undefined {
    if (this.#members.get(member.socket) !== member) return; // left before it could join
    let room = this.#rooms.get(member.room);
    if (!room) {
      room = { raw: new Set(), chat: new Set() };
      this.#rooms.set(member.room, room);
    }
    (member.mode === "raw" ? room.raw : room.chat).add(member.socket);
    const joined = this.#presence.join(member.room, member);
    const small = this.#crowds.changed(member.room);
    if (member.mode === "chat") {
      const { messages, recovered } = this.#history.after(member.room, since);
      this.#queue(member, room, {
        type: "welcome",
        id: member.id,
        name: member.name,
        room: member.room,
        count: this.#presence.count(member.room),
        ...(small
          ? { members: this.membersOf(member.room) }
          : { members: this.#presence.members(member.room, PRESENCE_SAMPLE), partial: true }),
        history: messages,
        recovered,
      });
    }
    this.#history.occupied(member.room);
    if (small) this.#announce(room, joined, member.socket);
    this.#bus?.publish({
      t: "join",
      node: this.node,
      room: member.room,
      member: { id: member.id, name: member.name, mode: member.mode },
    });
  }

  /** Replay what another hub published to this hub's own peers. */
  #receive(m: BusMessage): void {
    if (m.node === this.node) return;
    switch (m.t) {
      case "message":
        return this.#deliver(m.room, m.event);
      case "binary": {
        const room = this.#rooms.get(m.room);
        if (room) this.#outbox.sendAll(room.raw, m.data.buffer as ArrayBuffer, m.data.byteLength);
        return;
      }
      case "join":
        return this.#remote(m.room, this.#presence.remoteJoin(m.node, m.room, m.member));
      case "leave":
        return this.#remote(m.room, this.#presence.remoteLeave(m.room, m.id));
      case "rename":
        return this.#remote(m.room, this.#presence.remoteRename(m.room, m.id, m.name, m.oldName));
      case "sync":
        this.#bus?.publish({ t: "members", node: this.node, rooms: this.#presence.snapshot() });
        return;
      case "members":
        for (const [room] of m.rooms) this.#history.occupied(room);
        for (const [room, change] of this.#presence.replaceNode(m.node, m.rooms)) {
          this.#remote(room, change);
        }
        return;
      case "bye":
        for (const [room, change] of this.#presence.forgetNode(m.node)) this.#remote(room, change);
        return;
      case "history":
        return this.#history.replace(m.room, m.events);
    }
  }

  /**
   * Announce another hub's presence change here (or count it, in a room over the presence
   * limit), and keep history's TTL in step with it.
   */
  #remote(roomName: string, change: PresenceChange | undefined): void {
    if (change === undefined) return;
    if (change.type === "join") this.#history.occupied(roomName);
    if (change.type === "leave") this.#markIfEmpty(roomName);
    const small = change.type === "rename"
      ? !this.#crowds.has(roomName)
      : this.#crowds.changed(roomName);
    const room = this.#rooms.get(roomName);
    if (room && small) this.#announce(room, change);
  }

  /** Queue a presence event for every chat member of a room of this hub, if it has any. */
  #tell(roomName: string, event: ServerEvent): void {
    const room = this.#rooms.get(roomName);
    if (room) this.#announce(room, event);
  }

  /** Whether anyone is in `room` or about to be: its history must not expire. */
  #occupied(room: string): boolean {
    return this.#presence.occupied(room) || this.#watches.has(room);
  }

  /** Start a room's history TTL once nobody on any hub is in it. */
  #markIfEmpty(room: string): void {
    if (!this.#occupied(room)) this.#history.vacated(room);
  }

  #deliver(roomName: string, event: MessageEvent): void {
    this.#history.append(roomName, event);
    const room = this.#rooms.get(roomName);
    if (!room) return;
    if (room.raw.size > 0) this.#outbox.sendAll(room.raw, event.text, utf8Length(event.text));
    this.#announce(room, event);
  }

  /** Queue an event for every chat peer of a room but `except`. */
  #announce(room: Room, event: ServerEvent, except?: Peer): void {
    if (room.chat.size === 0) return;
    const line = JSON.stringify(event);
    this.#outbox.toRoom(room.chat, line, utf8Length(line), except);
  }

  /** Queue an event for one member only, keeping its place among the room's events. */
  #queue(member: Member, room: Room, event: ServerEvent): void {
    const line = JSON.stringify(event);
    // A joining member starts fresh: the room's pending events are already in its welcome.
    this.#outbox.toPeer(room.chat, member.socket, line, utf8Length(line), event.type === "welcome");
  }
}
