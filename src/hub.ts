/**
 * Rooms and fan-out. A room is two `Set`s of peers (raw and `chorus.v1`); the hub relays every
 * message to the peers of its room that are open, through one publish path, and drops a room
 * the moment its last member leaves. It composes the parts that hold the rest: who is where
 * ({@link Presence}), what rooms said and in which order ({@link StreamStore}, followed per
 * room by a {@link Tail}), what is queued for whom ({@link Outbox}, {@link CatchUps}) and the
 * connection limits ({@link Slots}). Every message goes through the store, and a hub delivers
 * only what the store hands back, in offset order, so every member of a room on every hub
 * hears one order. Given a {@link Bus}, hubs of several workers or instances share presence:
 * each publishes who comes and goes and replays what the others publish.
 * @module
 */
import { BACKPLANE_NODE, type Bus, type BusMessage, type RemoteMember } from "./bus.ts";
import { CatchUps } from "./catchup.ts";
import { closeFrame, type DropReason } from "./close.ts";
import { Crowds } from "./crowds.ts";
import { LocalStream } from "./local_stream.ts";
import type { Moderation } from "./moderation.ts";
import { MemoryBackend } from "./memory_store.ts";
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
import type { Appended, Frame, StreamPage, StreamStore } from "./store.ts";
import { type Recovery, RoomStreams } from "./room_streams.ts";
import type { Resume, Tail } from "./tail.ts";
import { RoomWatches } from "./watches.ts";
import type { HubObserver } from "./room_events.ts";
import { CONNECTING, OPEN, type Peer } from "./transport.ts";

/** Whether a connection may be admitted, or why not. */
export type Admission = LimitAdmission | "shutting_down";

/** Options that shape a hub; all come from {@link Config} in production. */
export interface HubOptions {
  /** Chat messages a `welcome` carries (`--history`); 0 sends none. */
  history: number;
  /**
   * Where rooms' streams are kept and put in order; the hub closes it on {@link Hub.dispose}.
   * A small in-memory store when omitted.
   */
  store?: StreamStore | undefined;
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
  /** Clock in ms since the epoch, for message timestamps; injectable for tests. */
  now?: (() => number) | undefined;
  /**
   * Asks the application about every chat message before it is stored (`--publish-hook-url`);
   * without it nothing is asked, and a message costs nothing more. Closed by {@link closeAll}.
   */
  moderation?: Moderation | undefined;
  /** Told who comes and goes and what is published here, e.g. for webhooks. */
  observer?: HubObserver | undefined;
  /**
   * Told of every message another hub publishes on the bus: the operator's numbers and controls
   * (`src/admin.ts`) travel with presence, and the hub hands them on.
   */
  onBus?: ((message: BusMessage) => void) | undefined;
}

/**
 * What became of a published text: stored ({@link Appended}), or refused by the moderation
 * hook with the `error` its sender is told (`rejected`, `hook_unavailable`).
 */
export type Published = Appended | ProtocolError;

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
  /** How the member is connected; a WebSocket when absent (the hub counts each apart). */
  readonly transport?: Transport;
  /**
   * The session an event-stream member sends with (`POST /ROOM`), told in its `welcome` with
   * the transport; WebSocket members have none.
   */
  readonly session?: string | undefined;
  /**
   * The `sub` of the member's token, or the connect hook's `id` in its place, when either gave
   * one (told to webhooks).
   */
  readonly sub?: string | undefined;
}

/** How a member is connected: a WebSocket, or server-sent events plus POSTs. */
export type Transport = "websocket" | "sse";

/** The `/metrics` slot that counts open connections like `member`. */
function connectionSlot(member: Member): number {
  if (member.transport === "sse") return C.sseConnections;
  return member.mode === "raw" ? C.rawConnections : C.chatConnections;
}

interface Room {
  readonly name: string;
  readonly raw: Set<Peer>;
  readonly chat: Set<Peer>;
}

/** A fresh id for a hub on a bus; also the prefix of every id that hub hands out. */
export function newNodeId(): string {
  return crypto.randomUUID().slice(0, 6);
}

/** The state of every room of one server (or one worker of it). */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<Peer, Member>();
  readonly #presence = new Presence();
  readonly #crowds: Crowds;
  readonly #store: StreamStore;
  /** The streams of the rooms with members here (or joining), one {@link Tail} each. */
  readonly #streams: RoomStreams;
  readonly #historySize: number;
  readonly #outbox: Outbox;
  readonly #catchUps: CatchUps;
  readonly #slots: Slots<Peer>;
  readonly #watches: RoomWatches;
  readonly #bus: Bus | undefined;
  readonly #onDrop: NonNullable<HubOptions["onDrop"]>;
  readonly #onBus: HubOptions["onBus"];
  /** When each occupied room last had a member change or a message here, in ms. */
  readonly #activity = new Map<string, number>();
  readonly #now: () => number;
  readonly #moderation: Moderation | undefined;
  readonly #observer: HubObserver | undefined;
  /** Counters of this hub, for `/metrics`. */
  readonly metrics: Metrics;
  /** This hub's id on the bus; also the prefix of every id it hands out. */
  readonly node: string;
  #seq = 0;
  /** Set by {@link closeAll}: no new connections from then on. */
  #shuttingDown = false;

  constructor(options: HubOptions) {
    this.metrics = options.metrics ?? new Metrics();
    this.node = options.node ?? newNodeId();
    this.#now = options.now ?? Date.now;
    this.#onDrop = options.onDrop ?? (() => {});
    this.#moderation = options.moderation;
    this.#observer = options.observer;
    this.#onBus = options.onBus;
    this.#slots = new Slots(options.limiter ?? new ConnectionLimiter(Infinity, Infinity));
    this.#outbox = new Outbox({
      maxBufferedBytes: options.maxBufferedBytes ?? Infinity,
      metrics: this.metrics,
      onSlow: (peer) => this.drop(peer, "slow_consumer"),
      onBroken: (peer) => void this.leave(peer, "error"),
    });
    this.#catchUps = new CatchUps({
      maxBufferedBytes: options.maxBufferedBytes ?? Infinity,
      write: (peer, frame, bytes, events) => this.#outbox.write(peer, frame, bytes, events),
      caughtUp: (peer) => this.#caughtUp(peer),
      slow: (peer) => this.drop(peer, "slow_consumer"),
    });
    this.#historySize = options.history;
    this.#store = options.store ?? new LocalStream({
      backend: new MemoryBackend({
        retainMessages: Math.max(options.history, 1000),
        retainMs: 24 * 3600_000,
        maxBytes: 64 * 1024 * 1024,
      }),
    });
    this.#streams = new RoomStreams({
      store: this.#store,
      historySize: options.history,
      deliver: (room, event) => this.#deliver(room, event),
    });
    this.#store.listen((room, epoch, frame) => this.#stored(room, epoch, frame));
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

  /** Rooms with members on this hub (joined or catching up). */
  get localRooms(): number {
    return this.#rooms.size;
  }

  /** This hub's connections, from the upgrade until they leave, for the operator's controls. */
  localMembers(): IterableIterator<Member> {
    return this.#members.values();
  }

  /**
   * When a room last had a member change (on any hub) or a message (delivered here), in ms;
   * undefined when nothing happened in it since it became occupied as seen from here.
   */
  lastActivity(room: string): number | undefined {
    return this.#activity.get(room);
  }

  /** The latest offset this hub delivered of a room it has members in; undefined otherwise. */
  head(room: string): number | undefined {
    return this.#streams.head(room);
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
    this.metrics.row[connectionSlot(member)]!++;
    this.#watches.watch(member.room);
  }

  /**
   * The member's connection opened: it joins its room, at once or, when something must be
   * waited for (the bus subscribing to the room, the store reading its stream, a resume's gap
   * being read), once that is done. Returns the promise of a join that waits; it never rejects.
   */
  open(member: Member, resume?: Resume): Promise<void> | undefined {
    const ready = this.#watches.ready(member.room);
    if (ready === undefined) return this.#enter(member, resume);
    return ready.then(() => this.#enter(member, resume));
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
    this.#catchUps.cancel(peer);
    this.#watches.unwatch(member.room);
    if (!this.#watches.has(member.room)) this.#streams.forget(member.room);
    if (reason === "client" || reason === "idle" || reason === "shutdown") {
      this.#slots.release(member.ip);
    } else {
      this.#slots.hold(peer, member.ip);
    }
    this.metrics.row[connectionSlot(member)]!--;
    this.metrics.disconnect(reason);
    member.ended?.();
    const room = this.#rooms.get(member.room);
    const left = this.#presence.leave(member.room, member);
    if (!room || !left) return member;
    this.#touch(member.room);
    this.#outbox.forget(peer, room.chat);
    (member.mode === "raw" ? room.raw : room.chat).delete(peer);
    // A member catching up is in no set yet, but its room must stay for it.
    const empty = room.raw.size === 0 && room.chat.size === 0;
    if (empty && !this.#catchUps.inRoom(member.room)) this.#rooms.delete(member.room);
    if (this.#crowds.changed(member.room)) this.#announce(room, left);
    this.#bus?.publish({ t: "leave", node: this.node, room: member.room, id: member.id });
    this.#observer?.left(member, reason, this.#presence.occupied(member.room));
    return member;
  }

  /**
   * Broadcast to a room on every hub: text as a chat `message` from `from` (to raw peers as
   * the text itself, to chat peers as the event), stored and numbered first; bytes to raw peers
   * only. Every message takes this path: a member's, a raw frame, the publish API's. It goes
   * to the store, and out from there in the room's order. Returns how many peers of this hub
   * it is for; `done` hears the message's offset once it is stored.
   *
   * With the moderation hook, text waits for its verdict first (unless `moderate` is false:
   * the application's own voice), and what the hook allows or replaces is published then. A
   * refusal goes to `done`; without `done`, a chat member of this hub (`from`) is told it as
   * an `error` event, and a raw member's frame is dropped (raw clients have no error channel).
   */
  publish(
    room: string,
    data: string | ArrayBuffer,
    from: MemberInfo,
    done?: (result: Published) => void,
    moderate = true,
  ): number {
    const r = this.#rooms.get(room);
    if (typeof data !== "string") {
      this.#store.append(room, new Uint8Array(data));
      return r?.raw.size ?? 0;
    }
    if (moderate && this.#moderation !== undefined) {
      this.#moderate(this.#moderation, room, data, from, done);
      return r ? r.raw.size + r.chat.size : 0;
    }
    const event: MessageEvent = {
      type: "message",
      id: this.nextId(),
      from: { id: from.id, name: from.name },
      text: data,
      ts: this.#now(),
    };
    const stored = this.#observer?.stored;
    this.#store.append(
      room,
      event,
      stored ? (result) => (stored(room, event, result), done?.(result)) : done,
    );
    return r ? r.raw.size + r.chat.size : 0;
  }

  /** Read a room's kept stream (the history API); see {@link StreamStore.read}. */
  readStream(
    room: string,
    query: Parameters<StreamStore["read"]>[1],
  ): StreamPage | Promise<StreamPage> {
    return this.#store.read(room, query);
  }

  /**
   * Change a member's display name and tell everyone in the room, the renamer included; in a
   * room over the presence limit, the renamer alone.
   */
  rename(member: Member, name: string): void {
    const change = this.#presence.rename(member, name);
    this.#touch(member.room);
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
   * Close a peer on the server's initiative, with the close frame of `why` (its reason worded
   * as `wording` when given), and remove it at once: its transport may never report `close`,
   * and nothing more may be queued for it.
   */
  drop(peer: Peer, why: DropReason, wording?: string): void {
    const member = this.leave(peer, why);
    const { code, reason } = closeFrame(why, wording);
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
    this.#moderation?.close();
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
    this.#outbox.dispose();
    this.#catchUps.dispose();
    this.#crowds.dispose();
    this.#slots.releaseAll();
    this.#bus?.publish({ t: "bye", node: this.node });
    await this.#bus?.close();
    await this.#store.close();
  }

  /**
   * Store and deliver what is pending in a store of this process, then write every queued
   * chat event now (see {@link Outbox.flush}).
   */
  flush(): void {
    this.#store.flush?.();
    this.#outbox.flush();
  }

  /**
   * Bring an opened member in once its room's tail is loaded and, for a chat member that
   * resumes, once the messages it missed are collected.
   */
  #enter(member: Member, resume: Resume | undefined): Promise<void> | undefined {
    if (this.#members.get(member.socket) !== member) return; // left before it could join
    const tail = this.#streams.tailOf(member.room);
    const loading = this.#streams.loading(tail);
    if (loading) return loading.then(() => this.#enter(member, resume));
    if (member.mode === "raw") return this.#join(member, tail, undefined);
    const recovery = this.#streams.recover(member.room, tail, resume);
    if (!(recovery instanceof Promise)) return this.#join(member, tail, recovery);
    return recovery.then((r) => this.#join(member, this.#streams.tailOf(member.room), r));
  }

  /**
   * Add an opened member to its room. A chat member first gets `welcome` (with the messages
   * after its position, when it resumes), then everyone else in the room hears `join`, unless
   * the room is over the presence limit: then the welcome lists a sample and the join is only
   * counted. A member with more to catch up on than `--history` gets the rest right after its
   * welcome, before anything new (see {@link CatchUps}).
   */
  #join(member: Member, tail: Tail, recovery: Recovery | undefined): undefined {
    if (this.#members.get(member.socket) !== member) return; // left before it could join
    let room = this.#rooms.get(member.room);
    if (!room) {
      room = { name: member.room, raw: new Set(), chat: new Set() };
      this.#rooms.set(member.room, room);
    }
    const joined = this.#presence.join(member.room, member);
    this.#touch(member.room);
    const small = this.#crowds.changed(member.room);
    if (member.mode === "raw") room.raw.add(member.socket);
    else {
      // Messages delivered since the gap was read are in the tail now: add them.
      const events = recovery!.events;
      const last = events.at(-1)?.offset ?? recovery!.after;
      for (const m of tail.recent) if (m.offset! > last) events.push(m);
      const history = events.splice(0, this.#historySize);
      const welcome: ServerEvent = {
        type: "welcome",
        id: member.id,
        name: member.name,
        room: member.room,
        count: this.#presence.count(member.room),
        ...(small
          ? { members: this.membersOf(member.room) }
          : { members: this.#presence.members(member.room, PRESENCE_SAMPLE), partial: true }),
        epoch: tail.epoch,
        offset: tail.head,
        after: recovery!.after,
        history,
        recovered: recovery!.recovered,
        ...(member.session === undefined
          ? {}
          : { session: member.session, transport: member.transport ?? "websocket" }),
      };
      if (events.length === 0) {
        room.chat.add(member.socket);
        this.#queue(member, room, welcome);
      } else {
        const lines = [JSON.stringify(welcome), ...events.map((e) => JSON.stringify(e))];
        this.#catchUps.start(member.socket, member.room, lines);
      }
    }
    if (small) this.#announce(room, joined, member.socket);
    this.#bus?.publish({
      t: "join",
      node: this.node,
      room: member.room,
      member: { id: member.id, name: member.name, mode: member.mode },
    });
    this.#observer?.joined(member);
  }

  /**
   * Ask the moderation hook about a text; publish what it allows (as `from` was when it sent
   * it) or hand its refusal to `done`, or to the sender (see {@link publish}).
   */
  #moderate(
    moderation: Moderation,
    room: string,
    text: string,
    from: MemberInfo,
    done: ((result: Published) => void) | undefined,
  ): void {
    const sender = { id: from.id, name: from.name };
    moderation.check(room, sender, text, (verdict) => {
      if (typeof verdict === "string") this.publish(room, verdict, sender, done, false);
      else if (done) done(verdict);
      else {
        const socket = (from as Partial<Member>).socket;
        const member = socket && this.#members.get(socket);
        if (member === from && member.mode === "chat") this.reject(member, verdict);
      }
    });
  }

  /** A member caught up on its gap: it joins its room's fan-out. */
  #caughtUp(peer: Peer): void {
    const member = this.#members.get(peer);
    const room = member && this.#rooms.get(member.room);
    if (room) room.chat.add(peer);
  }

  /** A frame the store stored (or, for bytes, ordered): deliver it in its room's order. */
  #stored(roomName: string, epoch: string, frame: Frame): void {
    if (!(frame instanceof Uint8Array)) return this.#streams.stored(roomName, epoch, frame);
    const room = this.#rooms.get(roomName);
    if (!room || room.raw.size === 0) return;
    const whole = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
    const data = (whole ? frame.buffer : frame.slice().buffer) as ArrayBuffer;
    this.#outbox.sendAll(room.raw, data, data.byteLength);
  }

  /** Replay what another hub published to this hub's own peers. */
  #receive(m: BusMessage): void {
    if (m.node === this.node) return;
    this.#onBus?.(m);
    switch (m.t) {
      case "join":
        return this.#remote(m.room, this.#presence.remoteJoin(m.node, m.room, m.member));
      case "leave":
        return this.#remote(m.room, this.#presence.remoteLeave(m.room, m.id));
      case "rename":
        return this.#remote(m.room, this.#presence.remoteRename(m.room, m.id, m.name, m.oldName));
      case "sync":
        if (m.node === BACKPLANE_NODE) this.#streams.catchUp();
        this.#bus?.publish({ t: "members", node: this.node, rooms: this.#presence.snapshot() });
        return;
      case "members":
        for (const [room, change] of this.#presence.replaceNode(m.node, m.rooms)) {
          this.#remote(room, change);
        }
        return;
      case "bye":
        for (const [room, change] of this.#presence.forgetNode(m.node)) this.#remote(room, change);
        return;
    }
  }

  /**
   * Announce another hub's presence change here (or count it, in a room over the presence
   * limit).
   */
  #remote(roomName: string, change: PresenceChange | undefined): void {
    if (change === undefined) return;
    if (change.type !== "rename") {
      this.#observer?.presence(roomName, this.#presence.occupied(roomName));
    }
    this.#touch(roomName);
    const small = change.type === "rename"
      ? !this.#crowds.has(roomName)
      : this.#crowds.changed(roomName);
    const room = this.#rooms.get(roomName);
    if (room && small) this.#announce(room, change);
  }

  /** Something happened in a room now: note it while the room is occupied, forget it after. */
  #touch(room: string): void {
    if (this.#presence.occupied(room)) this.#activity.set(room, this.#now());
    else this.#activity.delete(room);
  }

  /** Queue a presence event for every chat member of a room of this hub, if it has any. */
  #tell(roomName: string, event: ServerEvent): void {
    const room = this.#rooms.get(roomName);
    if (room) this.#announce(room, event);
  }

  #deliver(roomName: string, event: MessageEvent): void {
    const room = this.#rooms.get(roomName);
    if (!room) return;
    this.#activity.set(roomName, event.ts);
    if (room.raw.size > 0) this.#outbox.sendAll(room.raw, event.text, utf8Length(event.text));
    this.#announce(room, event);
  }

  /** Queue an event for every chat peer of a room but `except`. */
  #announce(room: Room, event: ServerEvent, except?: Peer): void {
    const line = JSON.stringify(event);
    this.#catchUps.toRoom(room.name, line, except);
    if (room.chat.size === 0) return;
    this.#outbox.toRoom(room.chat, line, utf8Length(line), except);
  }

  /** Queue an event for one member only, keeping its place among the room's events. */
  #queue(member: Member, room: Room, event: ServerEvent): void {
    const line = JSON.stringify(event);
    if (this.#catchUps.toPeer(member.socket, line)) return;
    // A joining member starts fresh: the room's pending events are already in its welcome.
    this.#outbox.toPeer(room.chat, member.socket, line, utf8Length(line), event.type === "welcome");
  }
}
