/**
 * Rooms and fan-out. A room is two `Set<WebSocket>`s (raw and `chorus.v1` sockets); the
 * hub relays every message to the sockets of its room that are `OPEN`, keeps each room's
 * recent chat history, and drops a room the moment its last member leaves.
 * @module
 */
import { type DisconnectReason, Metrics, utf8Length } from "./metrics.ts";
import type { TokenBucket } from "./ratelimit.ts";
import type { MemberInfo, MessageEvent, Mode, ProtocolError, ServerEvent } from "./protocol.ts";

/** Options that shape a hub; all come from {@link Config} in production. */
export interface HubOptions {
  /** Chat messages kept per room; 0 disables history. */
  history: number;
  /** Milliseconds an empty room's history is kept. */
  historyTtlMs: number;
  /** A socket whose unsent queue passes this many bytes is closed as a slow consumer. */
  maxBufferedBytes?: number;
  /** Open sockets allowed on the whole hub, counted from the upgrade on. */
  maxConnections?: number;
  /** Open sockets allowed from one IP address. */
  maxConnectionsPerIp?: number;
  /** Counters to count into; a private set when omitted. */
  metrics?: Metrics;
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
  /** Messages this member may still send; see `--rate-limit`. */
  readonly bucket: TokenBucket;
  /** Events waiting to be written to a chat socket as one newline-joined frame. */
  pending: string[];
  /** UTF-8 bytes of `pending` plus its separators. */
  pendingBytes: number;
  /** False until the socket opens and the member is in its room. */
  joined: boolean;
}

/** Why a connection is admitted or not by {@link Hub.admit}. */
export type Admission = "ok" | "max_connections" | "max_connections_per_ip";

interface Room {
  readonly raw: Set<WebSocket>;
  readonly chat: Set<WebSocket>;
}

interface History {
  messages: MessageEvent[];
  /** When the room became empty, or null while it has members. */
  emptySince: number | null;
}

const OPEN = 1;

/** In-process hub: the state of every room of one server. Create one per server. */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<WebSocket, Member>();
  readonly #histories = new Map<string, History>();
  readonly #dirty = new Set<Member>();
  readonly #perIp = new Map<string, number>();
  readonly #options: Required<HubOptions>;
  /** Counters of this hub, for `/metrics`. */
  readonly metrics: Metrics;
  readonly #prefix = crypto.randomUUID().slice(0, 6);
  #seq = 0;
  #flushScheduled = false;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: HubOptions) {
    this.#options = {
      now: Date.now,
      maxBufferedBytes: Infinity,
      maxConnections: Infinity,
      maxConnectionsPerIp: Infinity,
      metrics: new Metrics(),
      onDrop: () => {},
      ...options,
    };
    this.#options.now = options.now ?? Date.now;
    this.metrics = this.#options.metrics;
    if (options.history > 0) {
      const timer = setInterval(
        () => this.sweepHistory(),
        Math.max(1000, Math.min(60_000, options.historyTtlMs)),
      );
      Deno.unrefTimer(timer);
      this.#sweepTimer = timer;
    }
  }

  /** Connections across all rooms, counted from the upgrade until they leave. */
  get connections(): number {
    return this.#members.size;
  }

  /** Open connections by mode, for `/metrics`. */
  connectionsByMode(): { raw: number; chat: number } {
    let raw = 0;
    for (const m of this.#members.values()) if (m.mode === "raw") raw++;
    return { raw, chat: this.#members.size - raw };
  }

  /** Whether one more connection from `ip` fits under the connection limits. */
  admit(ip: string): Admission {
    if (this.#members.size >= this.#options.maxConnections) return "max_connections";
    if ((this.#perIp.get(ip) ?? 0) >= this.#options.maxConnectionsPerIp) {
      return "max_connections_per_ip";
    }
    return "ok";
  }

  /**
   * Count a just-upgraded connection against the limits before its socket opens, so a burst
   * of upgrades cannot overshoot them. {@link leave} releases it whatever happens next.
   */
  register(member: Member): void {
    this.#members.set(member.socket, member);
    this.#perIp.set(member.ip, (this.#perIp.get(member.ip) ?? 0) + 1);
  }

  /** Rooms with at least one member. */
  get rooms(): number {
    return this.#rooms.size;
  }

  /** A fresh unique id, for members and messages alike. */
  nextId(): string {
    return `${this.#prefix}-${(++this.#seq).toString(36)}`;
  }

  /** Members of a room as other members see them, in join order. */
  membersOf(room: string): MemberInfo[] {
    const r = this.#rooms.get(room);
    if (!r) return [];
    const out: MemberInfo[] = [];
    for (const set of [r.raw, r.chat]) {
      for (const ws of set) {
        const m = this.#members.get(ws)!;
        out.push({ id: m.id, name: m.name });
      }
    }
    return out;
  }

  /**
   * Add an open socket to its room. A chat member first gets `welcome` (with the messages
   * after `since`, when given), then everyone else in the room hears `join`.
   */
  join(member: Member, since?: string): void {
    if (this.#members.get(member.socket) !== member) return; // left before it opened
    member.joined = true;
    let room = this.#rooms.get(member.room);
    if (!room) {
      room = { raw: new Set(), chat: new Set() };
      this.#rooms.set(member.room, room);
    }
    (member.mode === "raw" ? room.raw : room.chat).add(member.socket);
    const history = this.#historyOf(member.room);
    if (history) history.emptySince = null;

    if (member.mode === "chat") {
      const { messages, recovered } = this.#recover(history?.messages ?? [], since);
      this.#queue(member, {
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
  }

  /**
   * Remove a socket from the hub at once. Safe to call more than once: the server calls it
   * when it closes a socket itself, because Deno may never fire `close` afterwards.
   */
  leave(socket: WebSocket, reason: DisconnectReason): Member | undefined {
    const member = this.#members.get(socket);
    if (!member) return undefined;
    this.#members.delete(socket);
    const perIp = this.#perIp.get(member.ip)! - 1;
    if (perIp === 0) this.#perIp.delete(member.ip);
    else this.#perIp.set(member.ip, perIp);
    this.metrics.disconnects[reason]++;
    this.#dirty.delete(member);
    member.pending.length = 0;
    member.pendingBytes = 0;
    if (!member.joined) return member;
    member.joined = false;
    const room = this.#rooms.get(member.room)!;
    (member.mode === "raw" ? room.raw : room.chat).delete(socket);
    if (room.raw.size === 0 && room.chat.size === 0) {
      this.#rooms.delete(member.room);
      const history = this.#histories.get(member.room);
      if (history) history.emptySince = this.#options.now();
    } else {
      this.#toChat(room, { type: "leave", id: member.id, name: member.name });
    }
    return member;
  }

  /**
   * Relay a raw client's frame: verbatim to raw sockets, as a `message` event to chat
   * sockets when it is text. Binary frames stay among raw clients.
   */
  relayRaw(member: Member, data: string | ArrayBuffer): void {
    const room = this.#rooms.get(member.room);
    if (!room) return;
    if (typeof data === "string") {
      this.say(member, data);
    } else {
      this.#toRaw(room, data);
    }
  }

  /** Broadcast a chat message from a member to everyone in its room, and keep it in history. */
  say(member: Member, text: string): MessageEvent | undefined {
    const room = this.#rooms.get(member.room);
    if (!room) return undefined;
    const event: MessageEvent = {
      type: "message",
      id: this.nextId(),
      from: { id: member.id, name: member.name },
      text,
      ts: this.#options.now(),
    };
    this.#remember(member.room, event);
    this.#toRaw(room, text);
    this.#toChat(room, event);
    return event;
  }

  /** Change a member's display name and tell everyone in the room, the renamer included. */
  rename(member: Member, name: string): void {
    const room = this.#rooms.get(member.room);
    if (!room) return;
    const oldName = member.name;
    member.name = name;
    this.#toChat(room, { type: "rename", id: member.id, name, oldName });
  }

  /** Tell one chat member what was wrong with its frame. */
  reject(member: Member, error: ProtocolError): void {
    this.#queue(member, error);
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

  /** Stop background timers; the hub must not be used afterwards. */
  dispose(): void {
    clearInterval(this.#sweepTimer);
  }

  /** Drop histories of rooms that have been empty for longer than the TTL. */
  sweepHistory(): void {
    const cutoff = this.#options.now() - this.#options.historyTtlMs;
    for (const [room, h] of this.#histories) {
      if (h.emptySince !== null && h.emptySince <= cutoff) this.#histories.delete(room);
    }
  }

  /** Write every queued chat event now, one frame per socket. */
  flush(): void {
    this.#flushScheduled = false;
    for (const member of this.#dirty) {
      const frame = member.pending.length === 1 ? member.pending[0] : member.pending.join("\n");
      const bytes = member.pendingBytes;
      this.metrics.messagesDelivered += member.pending.length;
      member.pending.length = 0;
      member.pendingBytes = 0;
      this.#send(member.socket, frame, bytes);
    }
    this.#dirty.clear();
  }

  #historyOf(room: string): History | undefined {
    this.sweepHistory();
    return this.#histories.get(room);
  }

  #remember(room: string, event: MessageEvent): void {
    const limit = this.#options.history;
    if (limit === 0) return;
    let h = this.#histories.get(room);
    if (!h) {
      h = { messages: [], emptySince: null };
      this.#histories.set(room, h);
    }
    h.messages.push(event);
    if (h.messages.length > limit) h.messages.splice(0, h.messages.length - limit);
  }

  #recover(
    messages: MessageEvent[],
    since: string | undefined,
  ): { messages: MessageEvent[]; recovered: boolean } {
    if (since === undefined) return { messages: messages.slice(), recovered: true };
    const at = messages.findIndex((m) => m.id === since);
    if (at === -1) return { messages: messages.slice(), recovered: false };
    return { messages: messages.slice(at + 1), recovered: true };
  }

  #toRaw(room: Room, data: string | ArrayBuffer): void {
    if (room.raw.size === 0) return;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    for (const socket of room.raw) {
      if (this.#send(socket, data, bytes)) this.metrics.messagesDelivered++;
    }
  }

  #toChat(room: Room, event: ServerEvent, except?: WebSocket): void {
    if (room.chat.size === 0) return;
    const line = JSON.stringify(event);
    const bytes = utf8Length(line);
    for (const socket of room.chat) {
      if (socket !== except) this.#queueLine(this.#members.get(socket)!, line, bytes);
    }
  }

  #queue(member: Member, event: ServerEvent): void {
    const line = JSON.stringify(event);
    this.#queueLine(member, line, utf8Length(line));
  }

  #queueLine(member: Member, line: string, bytes: number): void {
    if (member.pending.length > 0) member.pendingBytes++; // the "\n" separator
    member.pendingBytes += bytes;
    member.pending.push(line);
    this.#dirty.add(member);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
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
    this.metrics.bytesSent += bytes;
    if (socket.bufferedAmount > this.#options.maxBufferedBytes) {
      this.drop(socket, 1008, "slow consumer", "slow_consumer");
    }
    return true;
  }
}
