/**
 * Rooms and fan-out. A room is two `Set<WebSocket>`s (raw and `chorus.v1` sockets); the
 * hub relays every message to the sockets of its room that are `OPEN`, keeps each room's
 * recent chat history, and drops a room the moment its last member leaves. Given a
 * {@link Bus}, hubs of several workers or instances act as one: each publishes what its
 * members do and replays what the others publish.
 * @module
 */
import type { Bus, BusMessage, RemoteMember } from "./bus.ts";
import { type Admission as LimitAdmission, ConnectionLimiter } from "./limiter.ts";
import { C, type DisconnectReason, Metrics, utf8Length } from "./metrics.ts";
import type { MemberInfo, MessageEvent, Mode, ProtocolError, ServerEvent } from "./protocol.ts";
import type { TokenBucket } from "./ratelimit.ts";

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
  /** Connection limits; unlimited when omitted. */
  limiter?: ConnectionLimiter;
  /** Counters to count into; a private set when omitted. */
  metrics?: Metrics;
  /** Other hubs of the same server, or of other instances; none for a single process. */
  bus?: Bus;
  /** Told about every connection the hub itself closes, e.g. to log it. */
  onDrop?: (member: Member, reason: DisconnectReason) => void;
  /** Clock in ms since the epoch; injectable so tests can expire history instantly. */
  now?: () => number;
}

/** One connection in one room. Created by the server, owned by the hub after {@link Hub.join}. */
export interface Member {
  readonly id: string;
  name: string;
  readonly mode: Mode;
  readonly room: string;
  readonly socket: WebSocket;
  /** Remote IP address, for the per-IP connection limit. */
  readonly ip: string;
  /** Set when the member's token fixes its name, so `rename` is refused. */
  readonly nameLocked: boolean;
  /** Messages this member may still send; see `--rate-limit`. */
  readonly bucket: TokenBucket;
  /** Events waiting to be written to a chat socket as one newline-joined frame. */
  pending: string[];
  /** UTF-8 bytes of `pending` plus its separators. */
  pendingBytes: number;
  /** False until the socket opens and the member is in its room. */
  joined: boolean;
}

interface Room {
  readonly raw: Set<WebSocket>;
  readonly chat: Set<WebSocket>;
  /** Events for every chat socket of the room since the last flush: sent as one shared frame. */
  batch: string[];
  /** UTF-8 bytes of `batch` plus its separators. */
  batchBytes: number;
  /** Chat members with events of their own pending; they get a frame of their own. */
  readonly privates: Set<Member>;
}

interface History {
  messages: MessageEvent[];
  /** Approximate memory of `messages`, counted against `historyMaxBytes`. */
  bytes: number;
  /** When the room became empty, or null while it has members. */
  emptySince: number | null;
}

interface Remote extends RemoteMember {
  node: string;
}

const OPEN = 1;

/** What a kept message costs: its text plus a rough allowance for the event object. */
function historySize(event: MessageEvent): number {
  return 2 * (event.text.length + event.from.name.length) + 160;
}

/** How long a socket over `maxBufferedBytes` gets to drain before it counts as slow. */
const SLOW_CONSUMER_GRACE_MS = 100;

/** A queue this many times `maxBufferedBytes` closes the socket at once, without a grace turn. */
const SLOW_CONSUMER_HARD_FACTOR = 4;

/** How long a dropped socket's peer may take to finish closing before its slot is freed. */
const CLOSING_GRACE_MS = 30_000;

/**
 * How far back (ms) a recovery on a worker reaches for messages from other workers, which
 * the bus may have ordered differently there than on the worker the client saw them on.
 */
const REORDER_WINDOW_MS = 1000;

/** The state of every room of one server (or one worker of it). */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<WebSocket, Member>();
  readonly #remote = new Map<string, Map<string, Remote>>();
  /** Kept in least-recently-used order, so the global budget evicts cold rooms first. */
  readonly #histories = new Map<string, History>();
  #historyBytes = 0;
  /** Members with a frame of their own pending (see {@link Room.privates}). */
  readonly #dirty = new Set<Member>();
  /** Rooms with a shared batch pending. */
  readonly #dirtyRooms = new Set<Room>();
  /** Sockets over `maxBufferedBytes` right after a write, re-checked once Deno has written. */
  readonly #suspects = new Set<WebSocket>();
  #suspectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Sockets the server closed whose peers have not finished closing: they keep their slot. */
  readonly #closing = new Map<WebSocket, { ip: string; timer: ReturnType<typeof setTimeout> }>();
  /** Members (joined or not) per room, for a bus that carries only watched rooms. */
  readonly #interest = new Map<string, number>();
  /** Rooms whose {@link Bus.watch} has not resolved yet. */
  readonly #preparing = new Map<string, Promise<void>>();
  readonly #options: Required<Omit<HubOptions, "bus">>;
  readonly #bus: Bus | undefined;
  /** Counters of this hub, for `/metrics`. */
  readonly metrics: Metrics;
  /** This hub's id on the bus; also the prefix of every id it hands out. */
  readonly node = crypto.randomUUID().slice(0, 6);
  #seq = 0;
  /** Set by {@link closeAll}: no new connections from then on. */
  #shuttingDown = false;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: HubOptions) {
    this.#options = {
      maxBufferedBytes: Infinity,
      historyMaxBytes: Infinity,
      limiter: new ConnectionLimiter(Infinity, Infinity),
      metrics: new Metrics(),
      onDrop: () => {},
      ...options,
      now: options.now ?? Date.now,
    };
    this.metrics = this.#options.metrics;
    this.#bus = options.bus;
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
    let n = this.#members.size;
    for (const members of this.#remote.values()) n += members.size;
    return n;
  }

  /** Rooms with at least one member on any hub of the bus. */
  get rooms(): number {
    let n = this.#rooms.size;
    for (const room of this.#remote.keys()) if (!this.#rooms.has(room)) n++;
    return n;
  }

  /** Whether one more connection from `ip` fits under the connection limits; reserves it. */
  admit(ip: string): Admission {
    if (this.#shuttingDown) return "shutting_down";
    return this.#options.limiter.acquire(ip);
  }

  /**
   * Take over a just-upgraded connection admitted by {@link admit}, before its socket opens,
   * so a burst of upgrades cannot overshoot the limits. {@link leave} releases it.
   */
  register(member: Member): void {
    this.#members.set(member.socket, member);
    this.metrics.row[member.mode === "raw" ? C.rawConnections : C.chatConnections]++;
    this.#watch(member.room);
  }

  /**
   * Resolves once the bus carries `room` to this hub and its stored history is loaded, so a
   * member joining then misses nothing; undefined when there is nothing to wait for. Never
   * rejects.
   */
  ready(room: string): Promise<void> | undefined {
    return this.#preparing.get(room);
  }

  /** The member of a socket, while it is in the hub. */
  memberOf(socket: WebSocket): Member | undefined {
    return this.#members.get(socket);
  }

  /** A fresh unique id, for members and messages alike. */
  nextId(): string {
    return `${this.node}-${(++this.#seq).toString(36)}`;
  }

  /** Members of a room on every hub, as members see them: this hub's first, in join order. */
  membersOf(room: string): MemberInfo[] {
    const out: MemberInfo[] = [];
    const r = this.#rooms.get(room);
    if (r) {
      for (const set of [r.raw, r.chat]) {
        for (const ws of set) {
          const m = this.#members.get(ws)!;
          out.push({ id: m.id, name: m.name });
        }
      }
    }
    for (const m of this.#remote.get(room)?.values() ?? []) out.push({ id: m.id, name: m.name });
    return out;
  }

  /**
   * Add an open socket to its room. A chat member first gets `welcome` (with the messages
   * after `since`, when given), then everyone else in the room hears `join`.
   */
  join(member: Member, since?: string): void {
    if (this.#members.get(member.socket) !== member) return; // left before it opened
    member.joined = true;
    const room = this.#roomOf(member.room);
    (member.mode === "raw" ? room.raw : room.chat).add(member.socket);
    const history = this.#historyOf(member.room);
    if (history) history.emptySince = null;

    if (member.mode === "chat") {
      const { messages, recovered } = this.#recover(history?.messages ?? [], since);
      this.#queue(member, room, {
        type: "welcome",
        id: member.id,
        name: member.name,
        room: member.room,
        members: this.membersOf(member.room),
        history: messages,
        recovered,
      });
    }
    this.#toChat(room, { type: "join", id: member.id, name: member.name }, member.socket);
    this.#bus?.publish({
      t: "join",
      node: this.node,
      room: member.room,
      member: { id: member.id, name: member.name, mode: member.mode },
    });
  }

  /**
   * Remove a socket from the hub at once. Safe to call more than once: the server calls it
   * when it closes a socket itself, because Deno may never fire `close` afterwards.
   */
  leave(socket: WebSocket, reason: DisconnectReason): Member | undefined {
    const member = this.#members.get(socket);
    if (!member) {
      this.#released(socket);
      return undefined;
    }
    this.#members.delete(socket);
    this.#unwatch(member.room);
    this.#suspects.delete(socket);
    if (reason === "client" || reason === "idle" || reason === "shutdown") {
      this.#options.limiter.release(member.ip);
    } else {
      this.#holdSlot(socket, member.ip);
    }
    this.metrics.row[member.mode === "raw" ? C.rawConnections : C.chatConnections]--;
    this.metrics.disconnect(reason);
    this.#dirty.delete(member);
    this.#rooms.get(member.room)?.privates.delete(member);
    member.pending.length = 0;
    member.pendingBytes = 0;
    if (!member.joined) return member;
    member.joined = false;
    const room = this.#rooms.get(member.room)!;
    (member.mode === "raw" ? room.raw : room.chat).delete(socket);
    if (room.raw.size === 0 && room.chat.size === 0) this.#rooms.delete(member.room);
    this.#toChat(room, { type: "leave", id: member.id, name: member.name });
    this.#markIfEmpty(member.room);
    this.#bus?.publish({ t: "leave", node: this.node, room: member.room, id: member.id });
    return member;
  }

  /**
   * Relay a raw client's frame: verbatim to raw sockets, as a `message` event to chat
   * sockets when it is text. Binary frames stay among raw clients.
   */
  relayRaw(member: Member, data: string | ArrayBuffer): void {
    if (typeof data === "string") {
      this.say(member, data);
      return;
    }
    const room = this.#rooms.get(member.room);
    if (room) this.#toRaw(room, data);
    this.#bus?.publish({
      t: "binary",
      node: this.node,
      room: member.room,
      data: new Uint8Array(data),
    });
  }

  /** Broadcast a chat message from a member to everyone in its room, and keep it in history. */
  say(member: Member, text: string): MessageEvent {
    const event: MessageEvent = {
      type: "message",
      id: this.nextId(),
      from: { id: member.id, name: member.name },
      text,
      ts: this.#options.now(),
    };
    this.#deliverMessage(member.room, event);
    this.#bus?.publish({ t: "message", node: this.node, room: member.room, event });
    return event;
  }

  /**
   * Broadcast a message from outside the room (the HTTP publish API) as `from`: text like
   * {@link say} (raw and chat sockets, history), bytes to raw sockets only, on every hub of
   * the bus. Returns how many sockets of this hub it was sent to.
   */
  publish(room: string, data: string | ArrayBuffer, from: MemberInfo): number {
    const r = this.#rooms.get(room);
    if (typeof data !== "string") {
      const delivered = r?.raw.size ?? 0;
      if (r) this.#toRaw(r, data);
      this.#bus?.publish({ t: "binary", node: this.node, room, data: new Uint8Array(data) });
      return delivered;
    }
    const delivered = r ? r.raw.size + r.chat.size : 0;
    const event: MessageEvent = {
      type: "message",
      id: this.nextId(),
      from,
      text: data,
      ts: this.#options.now(),
    };
    this.#deliverMessage(room, event);
    this.#bus?.publish({ t: "message", node: this.node, room, event });
    return delivered;
  }

  /** Every room with members on any hub of the bus, with those members, this hub's first. */
  directory(): Map<string, RemoteMember[]> {
    const rooms = new Map(this.#snapshot());
    for (const [room, members] of this.#remote) {
      const list = rooms.get(room) ?? [];
      for (const m of members.values()) list.push({ id: m.id, name: m.name, mode: m.mode });
      rooms.set(room, list);
    }
    return rooms;
  }

  /** Change a member's display name and tell everyone in the room, the renamer included. */
  rename(member: Member, name: string): void {
    const oldName = member.name;
    member.name = name;
    const room = this.#rooms.get(member.room);
    if (room) this.#toChat(room, { type: "rename", id: member.id, name, oldName });
    this.#bus?.publish({
      t: "rename",
      node: this.node,
      room: member.room,
      id: member.id,
      name,
      oldName,
    });
  }

  /** Tell one chat member what was wrong with its frame. */
  reject(member: Member, error: ProtocolError): void {
    const room = this.#rooms.get(member.room);
    if (member.joined && room) this.#queue(member, room, error);
  }

  /**
   * Close a socket on the server's initiative and remove it at once: Deno may never fire
   * `close` for it, and nothing more may be queued for it.
   */
  drop(socket: WebSocket, code: number, reason: string, why: DisconnectReason): void {
    const member = this.leave(socket, why);
    if (socket.readyState === OPEN || socket.readyState === 0) socket.close(code, reason);
    if (member) this.#options.onDrop(member, why);
  }

  /**
   * Close every socket with the given code, emptying the hub at once. Resolves when every
   * socket reports closed, or after `timeoutMs` (Deno may never fire `close` for a socket the
   * server closed itself), so a shutdown neither hangs nor cuts close frames short.
   */
  closeAll(code: number, reason: string, timeoutMs = 2000): Promise<void> {
    this.#shuttingDown = true;
    this.flush();
    const closed: Promise<void>[] = [];
    for (const socket of [...this.#members.keys()]) {
      this.leave(socket, "shutdown");
      if (socket.readyState === OPEN) {
        closed.push(new Promise((resolve) => socket.addEventListener("close", () => resolve())));
        socket.close(code, reason);
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
    clearTimeout(this.#suspectTimer);
    clearTimeout(this.#flushTimer);
    for (const socket of [...this.#closing.keys()]) this.#released(socket);
    this.#bus?.publish({ t: "bye", node: this.node });
    await this.#bus?.close();
  }

  /** Drop histories of rooms that have been empty for longer than the TTL. */
  sweepHistory(): void {
    const cutoff = this.#options.now() - this.#options.historyTtlMs;
    for (const [room, h] of this.#histories) this.#expire(room, h, cutoff);
  }

  /** Drop one room's history if it has been empty since before `cutoff`; true if dropped. */
  #expire(room: string, h: History, cutoff: number): boolean {
    if (h.emptySince === null || h.emptySince > cutoff) return false;
    this.#histories.delete(room);
    this.#historyBytes -= h.bytes;
    return true;
  }

  /**
   * Write every queued chat event now: each room's batch as one frame shared by its chat
   * sockets (built once, however many sockets), and one frame of its own to each member that
   * has private events (a welcome, an error) mixed in.
   */
  flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    const row = this.metrics.row;
    const rooms = [...this.#dirtyRooms];
    this.#dirtyRooms.clear();
    for (const room of rooms) {
      const n = room.batch.length;
      if (n === 0) continue;
      const frame = n === 1 ? room.batch[0] : room.batch.join("\n");
      const bytes = room.batchBytes;
      room.batch = [];
      room.batchBytes = 0;
      for (const socket of room.chat) {
        if (this.#dirty.has(this.#members.get(socket)!)) continue;
        if (this.#send(socket, frame, bytes)) row[C.delivered] += n;
      }
    }
    const members = [...this.#dirty];
    this.#dirty.clear();
    for (const member of members) {
      this.#rooms.get(member.room)?.privates.delete(member);
      const n = member.pending.length;
      if (n === 0) continue;
      const frame = n === 1 ? member.pending[0] : member.pending.join("\n");
      const bytes = member.pendingBytes;
      member.pending = [];
      member.pendingBytes = 0;
      if (this.#send(member.socket, frame, bytes)) row[C.delivered] += n;
    }
  }

  /** Replay what another hub published to this hub's own sockets. */
  #receive(m: BusMessage): void {
    if (m.node === this.node) return;
    switch (m.t) {
      case "message":
        return this.#deliverMessage(m.room, m.event);
      case "binary": {
        const room = this.#rooms.get(m.room);
        if (room) this.#toRaw(room, m.data.buffer as ArrayBuffer);
        return;
      }
      case "join": {
        this.#addRemote(m.room, { ...m.member, node: m.node });
        const room = this.#rooms.get(m.room);
        if (room) this.#toChat(room, { type: "join", id: m.member.id, name: m.member.name });
        return;
      }
      case "leave": {
        const gone = this.#removeRemote(m.room, m.id);
        const room = this.#rooms.get(m.room);
        if (gone && room) this.#toChat(room, { type: "leave", id: gone.id, name: gone.name });
        return;
      }
      case "rename": {
        const remote = this.#remote.get(m.room)?.get(m.id);
        if (remote) remote.name = m.name;
        const room = this.#rooms.get(m.room);
        if (room) {
          this.#toChat(room, { type: "rename", id: m.id, name: m.name, oldName: m.oldName });
        }
        return;
      }
      case "sync":
        this.#bus?.publish({ t: "members", node: this.node, rooms: this.#snapshot() });
        return;
      case "members":
        return this.#replaceNode(m.node, m.rooms);
      case "bye":
        return this.#forgetNode(m.node, true);
      case "history":
        return this.#replaceHistory(m.room, m.events);
    }
  }

  /**
   * Take a hub's full member list in place of what was known of it, telling local members
   * who joined or left meanwhile (e.g. while the bus was down); a new hub's list tells nobody.
   */
  #replaceNode(node: string, rooms: [string, RemoteMember[]][]): void {
    const before = new Map<string, Remote>();
    for (const [room, members] of this.#remote) {
      for (const m of members.values()) if (m.node === node) before.set(`${room}\n${m.id}`, m);
    }
    this.#forgetNode(node, false);
    for (const [roomName, members] of rooms) {
      const room = this.#rooms.get(roomName);
      for (const member of members) {
        this.#addRemote(roomName, { ...member, node });
        const key = `${roomName}\n${member.id}`;
        const old = before.get(key);
        before.delete(key);
        if (!room) continue;
        if (!old) this.#toChat(room, { type: "join", id: member.id, name: member.name });
        else if (old.name !== member.name) {
          this.#toChat(room, {
            type: "rename",
            id: member.id,
            name: member.name,
            oldName: old.name,
          });
        }
      }
    }
    for (const [key, gone] of before) {
      const room = this.#rooms.get(key.slice(0, key.indexOf("\n")));
      if (room) this.#toChat(room, { type: "leave", id: gone.id, name: gone.name });
    }
  }

  /** Replace a room's kept messages with the bus's stored history (already merged by it). */
  #replaceHistory(room: string, events: MessageEvent[]): void {
    const old = this.#histories.get(room);
    if (old) {
      this.#histories.delete(room);
      this.#historyBytes -= old.bytes;
    }
    for (const event of events) this.#remember(room, event);
  }

  /** Count a member of `room` on this hub; the first asks the bus for the room. */
  #watch(room: string): void {
    if (!this.#bus?.watch) return;
    const n = this.#interest.get(room) ?? 0;
    this.#interest.set(room, n + 1);
    if (n > 0) return;
    const done = this.#bus.watch(room).finally(() => {
      if (this.#preparing.get(room) === done) this.#preparing.delete(room);
    });
    this.#preparing.set(room, done);
  }

  /** Uncount a member of `room`; when none is left, the bus may stop carrying it. */
  #unwatch(room: string): void {
    const n = this.#interest.get(room);
    if (n === undefined) return; // the bus carries every room
    if (n > 1) {
      this.#interest.set(room, n - 1);
      return;
    }
    this.#interest.delete(room);
    this.#preparing.delete(room);
    this.#bus?.unwatch?.(room);
  }

  #snapshot(): [string, RemoteMember[]][] {
    const rooms = new Map<string, RemoteMember[]>();
    for (const m of this.#members.values()) {
      if (!m.joined) continue;
      const list = rooms.get(m.room) ?? [];
      list.push({ id: m.id, name: m.name, mode: m.mode });
      rooms.set(m.room, list);
    }
    return [...rooms];
  }

  #addRemote(room: string, member: Remote): void {
    let members = this.#remote.get(room);
    if (!members) {
      members = new Map();
      this.#remote.set(room, members);
    }
    members.set(member.id, member);
    const history = this.#histories.get(room);
    if (history) history.emptySince = null;
  }

  #removeRemote(room: string, id: string): Remote | undefined {
    const members = this.#remote.get(room);
    const gone = members?.get(id);
    if (!members || !gone) return undefined;
    members.delete(id);
    if (members.size === 0) this.#remote.delete(room);
    this.#markIfEmpty(room);
    return gone;
  }

  /** Forget every member of a hub that left the bus, telling local members when asked to. */
  #forgetNode(node: string, announce: boolean): void {
    for (const [roomName, members] of [...this.#remote]) {
      for (const m of [...members.values()]) {
        if (m.node !== node) continue;
        this.#removeRemote(roomName, m.id);
        const room = this.#rooms.get(roomName);
        if (announce && room) this.#toChat(room, { type: "leave", id: m.id, name: m.name });
      }
    }
  }

  #roomOf(name: string): Room {
    let room = this.#rooms.get(name);
    if (!room) {
      room = { raw: new Set(), chat: new Set(), batch: [], batchBytes: 0, privates: new Set() };
      this.#rooms.set(name, room);
    }
    return room;
  }

  /** Start a room's history TTL once nobody on any hub is in it. */
  #markIfEmpty(room: string): void {
    if (this.#rooms.has(room) || this.#remote.has(room) || this.#interest.has(room)) return;
    const history = this.#histories.get(room);
    if (history) history.emptySince = this.#options.now();
  }

  #deliverMessage(roomName: string, event: MessageEvent): void {
    this.#remember(roomName, event);
    const room = this.#rooms.get(roomName);
    if (!room) return;
    this.#toRaw(room, event.text);
    this.#toChat(room, event);
  }

  /** A room's history unless it expired; the timer sweeps the other rooms. */
  #historyOf(room: string): History | undefined {
    const h = this.#histories.get(room);
    const cutoff = this.#options.now() - this.#options.historyTtlMs;
    return h && !this.#expire(room, h, cutoff) ? h : undefined;
  }

  #remember(room: string, event: MessageEvent): void {
    const limit = this.#options.history;
    if (limit === 0) return;
    let h = this.#histories.get(room);
    const isNew = h === undefined;
    if (h) this.#histories.delete(room); // re-inserted below: the Map stays in LRU order
    else h = { messages: [], bytes: 0, emptySince: null };
    this.#histories.set(room, h);
    if (isNew) this.#markIfEmpty(room); // a message published to an empty room must expire too
    h.messages.push(event);
    const size = historySize(event);
    h.bytes += size;
    this.#historyBytes += size;
    if (h.messages.length > limit) this.#evictOldest(room, h);
    // Over the global budget: forget the least recently used rooms' oldest messages first.
    for (const [name, lru] of this.#histories) {
      if (this.#historyBytes <= this.#options.historyMaxBytes) break;
      while (lru.messages.length > 0 && this.#historyBytes > this.#options.historyMaxBytes) {
        this.#evictOldest(name, lru);
      }
    }
  }

  #evictOldest(room: string, h: History): void {
    const size = historySize(h.messages.shift()!);
    h.bytes -= size;
    this.#historyBytes -= size;
    if (h.messages.length === 0) this.#histories.delete(room);
  }

  #recover(
    messages: MessageEvent[],
    since: string | undefined,
  ): { messages: MessageEvent[]; recovered: boolean } {
    if (since === undefined) return { messages: messages.slice(), recovered: true };
    const at = messages.findIndex((m) => m.id === since);
    if (at === -1) return { messages: messages.slice(), recovered: false };
    const after = messages.slice(at + 1);
    if (!this.#bus) return { messages: after, recovered: true };
    // Other workers' messages may sit just before `since` here yet came after it where the
    // client saw them; resend those few too (clients skip ids they have already shown).
    const node = since.slice(0, since.indexOf("-"));
    const cutoff = messages[at].ts - REORDER_WINDOW_MS;
    const before: MessageEvent[] = [];
    for (let i = at - 1; i >= 0 && messages[i].ts >= cutoff; i--) {
      if (!messages[i].id.startsWith(node + "-")) before.unshift(messages[i]);
    }
    return { messages: [...before, ...after], recovered: true };
  }

  #toRaw(room: Room, data: string | ArrayBuffer): void {
    if (room.raw.size === 0) return;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    const row = this.metrics.row;
    for (const socket of room.raw) {
      if (this.#send(socket, data, bytes)) row[C.delivered]++;
    }
  }

  #toChat(room: Room, event: ServerEvent, except?: WebSocket): void {
    if (room.chat.size === 0) return;
    const line = JSON.stringify(event);
    const bytes = utf8Length(line);
    const excluded = except && this.#members.get(except);
    if (excluded?.mode === "chat" && !this.#dirty.has(excluded)) {
      this.#privatize(excluded, room, true);
    }
    for (const m of room.privates) if (m !== excluded) this.#push(m, line, bytes);
    if (room.batch.length > 0) room.batchBytes++; // the "\n" separator
    room.batch.push(line);
    room.batchBytes += bytes;
    this.#dirtyRooms.add(room);
    this.#scheduleFlush();
  }

  /** Queue an event for one member only, keeping its place among the room's events. */
  #queue(member: Member, room: Room, event: ServerEvent): void {
    // A joining member starts fresh: the room's pending events are already in its welcome.
    if (!this.#dirty.has(member)) this.#privatize(member, room, event.type !== "welcome");
    const line = JSON.stringify(event);
    this.#push(member, line, utf8Length(line));
  }

  /** Give a member a frame of its own until the next flush, starting with the room's batch. */
  #privatize(member: Member, room: Room, inherit: boolean): void {
    member.pending = inherit ? room.batch.slice() : [];
    member.pendingBytes = inherit ? room.batchBytes : 0;
    room.privates.add(member);
    this.#dirty.add(member);
    this.#scheduleFlush();
  }

  #push(member: Member, line: string, bytes: number): void {
    if (member.pending.length > 0) member.pendingBytes++; // the "\n" separator
    member.pendingBytes += bytes;
    member.pending.push(line);
  }

  /**
   * Flush on a later turn of the event loop, not a microtask: messages from many sockets that
   * arrive together then share one frame per socket, which is what makes chat fan-out cheap.
   */
  #scheduleFlush(): void {
    this.#flushTimer ??= setTimeout(() => this.flush(), 0);
  }

  /** Write one frame; false when the socket was not open or had to be dropped. */
  #send(socket: WebSocket, data: string | ArrayBuffer, bytes: number): boolean {
    if (socket.readyState !== OPEN) return false;
    try {
      socket.send(data);
    } catch (err) {
      // A socket that cannot take a frame is gone for everyone: drop it, keep broadcasting.
      if (!(err instanceof DOMException)) throw err;
      this.leave(socket, "error");
      return false;
    }
    this.metrics.row[C.bytesOut] += bytes;
    const buffered = socket.bufferedAmount;
    const limit = this.#options.maxBufferedBytes;
    if (buffered > limit) {
      // One event-loop turn can queue more than the limit before Deno writes anything, even
      // for a fast reader, and a busy event loop may not let Deno write for a while: judge it
      // SLOW_CONSUMER_GRACE_MS later, unless the queue is already far too long.
      if (buffered > SLOW_CONSUMER_HARD_FACTOR * limit) this.#dropSlow(socket);
      else this.#suspect(socket);
    }
    return true;
  }

  #suspect(socket: WebSocket): void {
    this.#suspects.add(socket);
    this.#suspectTimer ??= setTimeout(() => {
      this.#suspectTimer = undefined;
      for (const s of this.#suspects) {
        if (s.bufferedAmount > this.#options.maxBufferedBytes) this.#dropSlow(s);
      }
      this.#suspects.clear();
    }, SLOW_CONSUMER_GRACE_MS);
  }

  #dropSlow(socket: WebSocket): void {
    this.drop(socket, 1008, "slow consumer", "slow_consumer");
  }

  /**
   * Keep a dropped socket's connection slot until its peer finishes the close (Deno keeps the
   * TCP connection until then), so peers that ignore close frames cannot pile up past the
   * limits; release it anyway after {@link CLOSING_GRACE_MS} in case `close` never fires.
   */
  #holdSlot(socket: WebSocket, ip: string): void {
    const timer = setTimeout(() => this.#released(socket), CLOSING_GRACE_MS);
    Deno.unrefTimer(timer);
    this.#closing.set(socket, { ip, timer });
  }

  /** The peer of a dropped socket finished closing (or the grace ran out): free its slot. */
  #released(socket: WebSocket): void {
    const held = this.#closing.get(socket);
    if (!held) return;
    clearTimeout(held.timer);
    this.#closing.delete(socket);
    this.#options.limiter.release(held.ip);
  }
}
