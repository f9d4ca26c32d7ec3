/**
 * The Redis backplane of `--redis-url`: a {@link Bus} over Redis pub/sub that makes chorus
 * instances behind a load balancer one hub (presence), and the {@link StreamStore} of those
 * instances: Redis numbers each room's messages in one script, keeps them in a Redis Stream, and
 * every instance (the sender's included) delivers them from its subscription, so every member
 * everywhere gets one order. `docs/scaling.md` is the prose twin of this file.
 *
 * Keys and channels carry each room's hash tag (`chorus:{/lobby}:events`), so every key and
 * channel of a room lives on one Redis Cluster slot and the design can move to sharded pub/sub.
 * @module
 */
import { createClient } from "redis";
import { BACKPLANE_NODE, type Bus, type BusMessage } from "./bus.ts";
import type { Logger } from "./log.ts";
import { C, type Metrics } from "./metrics.ts";
import type { MessageEvent } from "./protocol.ts";
import type { Occupancy, RoomState } from "./room_events.ts";
import {
  type Appended,
  type Frame,
  newEpoch,
  type Position,
  type Receive,
  type StreamPage,
  type StreamQuery,
  type StreamStore,
} from "./store.ts";

/** How often an instance tells the others (and itself) it is alive. */
export const HEARTBEAT_MS = 1000;

/**
 * An instance silent for this long is gone: its members leave everywhere. Silent means: this
 * instance has heard its own heartbeat back, sent more than this long after the other was
 * last heard, so a backlog on this instance's own connection never expires anybody.
 */
export const PEER_EXPIRY_MS = 5000;

/** A killed instance's members have left everywhere this long after it died, at the latest. */
export const LEAVE_BOUND_MS = PEER_EXPIRY_MS + HEARTBEAT_MS;

/** Longest a new member waits for its room's subscription before joining anyway. */
export const WATCH_TIMEOUT_MS = 2000;

/**
 * Longest a {@link RedisBus.read} waits for Redis before it rejects: a hung Redis must not hold
 * a joining member's `welcome` for ever (commands have no timeout of their own, see below).
 */
export const READ_TIMEOUT_MS = 2000;

/**
 * Longest a message waits for Redis to number it before this instance delivers it to its own
 * members unnumbered (as while Redis is down): a hung Redis must not silence every room. The
 * hub skips the numbered copy if Redis takes the message after all.
 */
export const APPEND_TIMEOUT_MS = 2000;

/** Reconnect backoff: doubles from the first delay up to the last, plus up to 20% jitter. */
export const RECONNECT_BACKOFF_MS = [100, 2000] as const;

/**
 * Member lists (answers to `sync`) wait this long, so the many `sync`s after a Redis restart
 * are answered with one list per instance rather than one per asker.
 */
export const MEMBERS_DELAY_MS = 250;

/** Longest `close()` waits for pending appends and the goodbye before cutting the connections. */
const CLOSE_TIMEOUT_MS = 1000;

/**
 * Commands node-redis may hold unanswered (Redis hung with the connection open); more are
 * dropped. Commands have no timeout of their own: node-redis' default 5 s would silently drop
 * messages queued while a busy event loop had no turn to write them.
 */
const MAX_QUEUED_COMMANDS = 100_000;

/** Presence, heartbeats and resyncs of every instance: one channel all instances hear. */
export const CONTROL_CHANNEL = "chorus:{control}";

/**
 * The channel of one room's frames (numbered chat messages, binary frames); heard only by
 * instances with members in the room.
 */
export function roomChannel(room: string): string {
  return `chorus:{${room}}:events`;
}

/**
 * The Redis Stream of one room's kept chat messages: entry `N-0` is the message of offset N, its
 * one field `e` the event as JSON without its offset. XRANGE by offset needs no index.
 */
export function streamKey(room: string): string {
  return `chorus:{${room}}:stream`;
}

/**
 * The hash of one room's stream state: `epoch` (see {@link Position}) and `head`, the latest
 * offset given out. It outlives the stream's trimmed messages, so offsets never restart while the
 * room lives; when it is gone (expired, deleted, evicted) the room starts over in a new epoch.
 */
export function metaKey(room: string): string {
  return `chorus:{${room}}:meta`;
}

/**
 * Number, keep and publish one chat message, atomically and in one reply, so the offset order
 * is the publish order every subscriber hears. KEYS: {@link metaKey}, {@link streamKey}. ARGV: a
 * candidate epoch (used when the room has none: its stream starts over, and a stream left of an
 * old epoch is deleted), the event JSON without offset, messages kept (0: numbered, not kept),
 * the expiry of the room's keys in ms (0: none), the room channel, and the start of the published
 * JSON ({@link storedPrefix}). Returns `[epoch, offset]`. The published text is exactly what
 * {@link encodeRoom} makes of a `stored` message. The message is kept before the head moves, so
 * a failing XADD (out of memory) leaves no offset behind that was given out but never kept.
 */
export const APPEND_SCRIPT = `local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head')
local epoch, offset = meta[1], tonumber(meta[2]) or 0
if not epoch then
  epoch, offset = ARGV[1], 0
  redis.call('DEL', KEYS[2])
end
offset = offset + 1
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', offset), 'e', ARGV[2])
end
redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', offset)
if ARGV[4] == '0' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. cjson.encode(epoch) ..
  string.format(',"offset":%d,"event":', offset) .. ARGV[2] .. '}')
return {epoch, offset}`;

/**
 * Read a room's stream in one consistent step. KEYS: {@link metaKey}, {@link streamKey}. ARGV: a
 * candidate epoch (a room without one gets it, with the expiry ARGV[2] in ms, 0: none, so every
 * instance agrees on an empty room's epoch), the query kind (`after`, `before`, `last`), its
 * offset (0 for `last`) and its count. Returns `[epoch, head, first, id, json, id, json, …]`
 * with the entries in the query's order.
 */
export const READ_SCRIPT = `local epoch = redis.call('HGET', KEYS[1], 'epoch')
local head = 0
if epoch then
  head = tonumber(redis.call('HGET', KEYS[1], 'head'))
else
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0)
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = head + 1
if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^%d+')) end
local kind, at, n = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local entries = {}
if n > 0 then
  if kind == 'after' then
    entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', math.max(at, 0) + 1), '+',
      'COUNT', n)
  elseif kind == 'before' then
    if at > 1 then
      entries = redis.call('XREVRANGE', KEYS[2], string.format('%d-0', at - 1), '-', 'COUNT', n)
    end
  else
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
  end
end
local reply = {epoch, head, first}
local from, to, step = 1, #entries, 1
if kind == 'last' then from, to, step = #entries, 1, -1 end
for i = from, to, step do
  reply[#reply + 1] = entries[i][1]
  reply[#reply + 1] = entries[i][2][2]
end
return reply`;

/**
 * The key of what the application was last told of a room by webhooks: `occupied` or
 * `vacant` (see `src/room_events.ts`). Missing means unknown: nobody has claimed it for
 * {@link ROOM_STATE_TTL_MS}.
 */
export function occupancyKey(room: string): string {
  return `chorus:{${room}}:occupancy`;
}

/**
 * How long a room's {@link occupancyKey} outlives the last instance that refreshed it: the
 * instances with members in a room refresh it every quarter of this, so it expires only when
 * every instance that held the room is gone without telling (a whole cluster killed at once),
 * and the room's next member then gets its `room.occupied` again.
 */
export const ROOM_STATE_TTL_MS = 10 * 60_000;

/** Longest a claim waits for Redis before it fails (and is tried again later). */
export const CLAIM_TIMEOUT_MS = 2000;

/**
 * Claim the change of a room to a state, for the webhook of that change, atomically: of all the
 * instances that saw the change and ask, exactly one gets 1. KEYS: {@link occupancyKey}. ARGV:
 * the state (`occupied`, `vacant`) and the key's expiry in ms. The claim succeeds when the room
 * is not in that state yet; a vacancy also succeeds when the state is unknown (expired), so a
 * room whose key expired still gets its `room.vacated`, once.
 */
export const CLAIM_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

export { BACKPLANE_NODE };

/**
 * What crosses the control channel: the bus's messages plus the heartbeat, which stays in this
 * module; `at` is when its sender sent it, by the sender's clock (only the sender reads it).
 */
export type Wire = BusMessage | { t: "alive"; node: string; at: number };

/**
 * What crosses a room's channel. No `node`: every instance delivers every frame, its own
 * included, because the order Redis published them in is the room's one order.
 */
export type RoomWire =
  /** A chat message as {@link APPEND_SCRIPT} numbered and kept it. */
  | { t: "stored"; room: string; epoch: string; offset: number; event: MessageEvent }
  /** A raw client's binary frame: published as is, neither kept nor numbered. */
  | { t: "binary"; room: string; data: Uint8Array };

/**
 * A control message as published: JSON with `node` first, so a receiver can skip its own echo
 * without parsing it.
 */
export function encode(m: Wire): string {
  const { node, ...rest } = m;
  return JSON.stringify({ node, ...rest });
}

/** The inverse of {@link encode}; throws `SyntaxError` for anything that is not JSON. */
export function decode(payload: string): Wire {
  return JSON.parse(payload);
}

/**
 * How a `stored` message starts on the wire, up to its epoch: {@link APPEND_SCRIPT} appends the
 * rest in Lua, where the epoch and offset are known.
 */
export function storedPrefix(room: string): string {
  return `{"t":"stored","room":${JSON.stringify(room)},"epoch":`;
}

/**
 * A room frame as published; binary data in base64. A `stored` message is encoded exactly as
 * {@link APPEND_SCRIPT} publishes it (only tests need that here).
 */
export function encodeRoom(m: RoomWire): string {
  if (m.t === "binary") return JSON.stringify({ t: m.t, room: m.room, data: m.data.toBase64() });
  return `${storedPrefix(m.room)}${JSON.stringify(m.epoch)},"offset":${m.offset},"event":${
    JSON.stringify(m.event)
  }}`;
}

/** The inverse of {@link encodeRoom}; throws `SyntaxError` for anything that is not JSON. */
export function decodeRoom(payload: string): RoomWire {
  const m = JSON.parse(payload);
  if (m?.t === "binary") m.data = Uint8Array.fromBase64(m.data);
  return m;
}

/** The URL with its password replaced by `***`, for logs. */
export function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password !== "") u.password = "***";
  return u.href;
}

/**
 * Why a {@link RedisBus.read} could not answer: Redis is down, did not answer within
 * {@link READ_TIMEOUT_MS}, or the script failed (`cause`). The hub treats the room as read
 * empty, with `recovered: false` for whoever asked to resume.
 */
export class StreamUnavailable extends Error {
  /** `message` says which of the three; `cause` carries the Redis error, if any. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StreamUnavailable";
  }
}

/** What a {@link RedisBus} needs; all of it comes from the config in production. */
export interface RedisBusOptions {
  /** `--redis-url`. */
  url: string;
  /**
   * The id of the hub on this bus ({@link Hub.node}): its heartbeats carry it, and its own
   * presence messages coming back from Redis are recognised by it.
   */
  node: string;
  /** `--retain-messages`: chat messages kept per room; 0 keeps none (they are still numbered). */
  retainMessages: number;
  /**
   * How long a room's stream (messages, epoch, offset counter) outlives its last message, in
   * ms (`--retain-days`); then it expires whole, and the room starts over in a new epoch. 0 (or
   * Infinity) keeps it until deleted.
   */
  retainMs: number;
  log: Logger;
  /** The hub's counters; the bus writes the `backplane` slots of its row. */
  metrics: Metrics;
}

type RedisClient = ReturnType<typeof createClient>;

/** A chat message as it travels inside this module: with its offset once it has one. */
type Numbered = MessageEvent & { offset?: number };

/**
 * An append waiting for Redis, in the order appended: fallbacks are delivered, and `done`
 * told, in that order, so a sender's frames keep their order even when Redis fails midway.
 */
interface PendingAppend {
  room: string;
  frame: Frame;
  done: ((result: Appended) => void) | undefined;
  /** `sent`: waiting for Redis; `stored`: Redis took it; `local`: deliver it here only. */
  state: "sent" | "stored" | "local";
  position: Position | null;
  /** When it was sent, for {@link APPEND_TIMEOUT_MS}. */
  at: number;
}

/** Delay before reconnect attempt `retries` (0-based). */
function backoff(retries: number): number {
  const [first, last] = RECONNECT_BACKOFF_MS;
  const delay = Math.min(last, first * 2 ** Math.min(retries, 20));
  return Math.round(delay * (1 + Math.random() * 0.2));
}

/**
 * A {@link Bus} (presence) and {@link StreamStore} (room messages) over Redis: one connection
 * publishes and runs the scripts, one subscribes to the control channel and to the channels of
 * the rooms this instance has members in.
 *
 * `subscribe` serves both interfaces, told apart by the receiver's declared parameters: a
 * function of one parameter gets bus messages, one of three (`(room, epoch, frame)`) gets room
 * frames.
 */
export class RedisBus implements Bus, StreamStore, Occupancy {
  readonly #options: RedisBusOptions;
  readonly #row: Float64Array;
  readonly #pub: RedisClient;
  readonly #sub: RedisClient;
  #receive: ((message: BusMessage) => void) | undefined;
  #receiveFrame: Receive | undefined;
  /** The hub's node id. */
  readonly #self: string;
  /** How this node's messages start on the wire, to skip their echo. */
  readonly #selfPrefix: string;
  /** {@link RedisBusOptions.retainMs} as the scripts take it: whole ms, "0" for no expiry. */
  readonly #ttl: string;
  /** When this node sent the latest heartbeat it has heard back; see {@link PEER_EXPIRY_MS}. */
  #echoAt: number | undefined;
  #up = false;
  /** Counts the connections coming up: a resync that was overtaken by another stays quiet. */
  #generation = 0;
  /** The SHA1 of each script once Redis has it; EVAL with the text until then. */
  readonly #shas = new Map<string, string>();
  #everUp = false;
  /** Set once the first failure to reach Redis at start has been logged. */
  #warnedAtStart = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #lastError = "";
  /** Rooms this instance has members in. */
  readonly #rooms = new Set<string>();
  /** The latest epoch heard of each watched room, for frames that carry none. */
  readonly #epochs = new Map<string, string>();
  /** Rooms heard from after this instance let them go, already unsubscribed once more. */
  readonly #stray = new Set<string>();
  /** Appends not yet settled, oldest first. */
  readonly #pending: PendingAppend[] = [];
  /** Waiting for {@link #pending} to empty (`close`). */
  readonly #idle: (() => void)[] = [];
  /** Other instances, by node, with when they were last heard from. */
  readonly #peers = new Map<string, number>();
  /** Instances declared gone, with when: hearing one again asks for its members. */
  readonly #expired = new Map<string, number>();
  #pendingMembers: BusMessage | undefined;
  #membersTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #timers: ReturnType<typeof setInterval>[] = [];
  /** Set by the first {@link claimRoom}: this instance refreshes its rooms' occupancy keys. */
  #claims = false;

  constructor(options: RedisBusOptions) {
    this.#options = options;
    this.#self = options.node;
    this.#selfPrefix = `{"node":${JSON.stringify(options.node)},`;
    const ms = options.retainMs;
    this.#ttl = String(Number.isFinite(ms) && ms > 0 ? Math.ceil(ms) : 0);
    this.#row = options.metrics.row;
    this.#row[C.backplaneOn] = 1;
    this.#row[C.backplaneUp] = 0;
    this.#pub = createClient({
      url: options.url,
      // While Redis is unreachable, commands fail at once instead of piling up in memory.
      disableOfflineQueue: true,
      commandsQueueMaxLength: MAX_QUEUED_COMMANDS,
      commandOptions: { timeout: 0 },
      socket: { reconnectStrategy: backoff, connectTimeout: 2000 },
    });
    this.#sub = this.#pub.duplicate();
    for (const client of [this.#pub, this.#sub]) {
      client.on("error", (err: unknown) => this.#failed(err));
      for (const event of ["ready", "reconnecting", "end"]) client.on(event, () => this.#check());
      client.connect().catch((err: unknown) => this.#failed(err));
    }
    this.#every(HEARTBEAT_MS, () => this.#heartbeat());
    this.#every(APPEND_TIMEOUT_MS / 4, () => this.#expireAppends());
    this.#every(ROOM_STATE_TTL_MS / 4, () => this.#keepRoomStates());
  }

  /** Presence to every instance (the control channel); nothing is queued while Redis is down. */
  publish(m: BusMessage): void {
    switch (m.t) {
      case "sync":
        // The hub's own, at its start; the bus sends one whenever it (re)connects anyway.
        if (this.#up) this.#send(CONTROL_CHANNEL, m);
        return;
      case "members":
        this.#pendingMembers = m;
        this.#membersTimer ??= setTimeout(() => this.#flushMembers(), MEMBERS_DELAY_MS);
        return;
      default:
        // join, leave, rename, bye: a list of members still waiting must go out before them.
        this.#flushMembers();
        return this.#send(CONTROL_CHANNEL, m);
    }
  }

  subscribe(receive: (message: BusMessage) => void): void {
    this.#receive = receive;
  }

  listen(receive: Receive): void {
    this.#receiveFrame = receive;
  }

  /**
   * Start receiving `room`'s frames. Resolves once its channel's subscription is active, or at
   * once while Redis is down (it is subscribed when Redis is back, before the bus's `sync`), or
   * after {@link WATCH_TIMEOUT_MS}; never rejects.
   */
  async watch(room: string): Promise<void> {
    this.#rooms.add(room);
    this.#stray.delete(room);
    if (!this.#up) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, WATCH_TIMEOUT_MS));
    await Promise.race([this.#subscribeRoom(room), timeout]);
    clearTimeout(timer);
  }

  /** Stop receiving `room`'s frames (its last member on this instance left). */
  unwatch(room: string): void {
    this.#rooms.delete(room);
    this.#epochs.delete(room);
    this.#unsubscribe(room);
  }

  /**
   * Number, keep and publish a chat message ({@link APPEND_SCRIPT}), or publish a binary frame;
   * every instance watching the room (this one too) delivers it from its subscription. While
   * Redis is down, or when the command fails, the frame is handed to this instance's receiver
   * alone, without offset, and `done` gets null (binary frames always get null: never kept).
   */
  append(room: string, frame: Frame, done?: (result: Appended) => void): void {
    let event: Numbered | undefined;
    if (!(frame instanceof Uint8Array)) {
      event = { ...frame };
      delete event.offset; // the store sets it; an unstored message has none
    }
    const op: PendingAppend = {
      room,
      frame: event ?? frame,
      done,
      state: "sent",
      position: null,
      at: Date.now(),
    };
    this.#pending.push(op);
    if (this.#closed || !this.#up) {
      op.state = "local";
      queueMicrotask(() => this.#drain());
      return;
    }
    const sent: Promise<unknown> = event
      ? this.#runAppend(room, event).then((position) => op.position = position)
      : this.#pub.publish(
        roomChannel(room),
        encodeRoom({ t: "binary", room, data: frame as Uint8Array }),
      );
    sent.then(
      () => op.state = "stored",
      (err: unknown) => {
        op.state = "local";
        this.#failed(err);
      },
    ).finally(() => this.#drain());
  }

  /**
   * Read a room's stream ({@link READ_SCRIPT}): its epoch (a room without one gets one, which
   * every instance then agrees on), head, first kept offset and the messages asked for. Rejects
   * with {@link StreamUnavailable} while Redis is down, after {@link READ_TIMEOUT_MS} without an
   * answer, or when the script fails.
   */
  read(room: string, query: StreamQuery): Promise<StreamPage> {
    if (this.#closed || !this.#up) {
      return Promise.reject(new StreamUnavailable("backplane down: the stream cannot be read"));
    }
    const [kind, at, count] = "after" in query
      ? ["after", query.after, query.limit]
      : "before" in query
      ? ["before", query.before, query.limit]
      : ["last", 0, query.last];
    const reply = this.#eval(READ_SCRIPT, {
      keys: [metaKey(room), streamKey(room)],
      arguments: [newEpoch(), this.#ttl, kind, String(Math.floor(at)), String(Math.floor(count))],
    }).then((reply) => this.#page(room, reply as unknown[]), (err: unknown) => {
      this.#failed(err);
      throw new StreamUnavailable("reading the stream failed", { cause: err });
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) =>
      timer = setTimeout(
        () => reject(new StreamUnavailable(`no answer from Redis in ${READ_TIMEOUT_MS} ms`)),
        READ_TIMEOUT_MS,
      )
    );
    return Promise.race([reply, timeout]).finally(() => clearTimeout(timer));
  }

  /**
   * Whether this instance sends the webhook of `room`'s change to `state` ({@link
   * CLAIM_SCRIPT}): every instance that sees the change asks, one wins. Rejects while Redis is
   * down, when the script fails or after {@link CLAIM_TIMEOUT_MS}; the caller asks again later.
   */
  claimRoom(room: string, state: RoomState): Promise<boolean> {
    if (this.#closed || !this.#up) {
      return Promise.reject(new Error("backplane down: the room's state cannot be claimed"));
    }
    this.#claims = true;
    const reply = this.#eval(CLAIM_SCRIPT, {
      keys: [occupancyKey(room)],
      arguments: [state, String(ROOM_STATE_TTL_MS)],
    }).then((reply) => reply === 1, (err: unknown) => {
      this.#failed(err);
      throw new Error("claiming the room's state failed", { cause: err });
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) =>
      timer = setTimeout(
        () => reject(new Error(`no answer from Redis in ${CLAIM_TIMEOUT_MS} ms`)),
        CLAIM_TIMEOUT_MS,
      )
    );
    return Promise.race([reply, timeout]).finally(() => clearTimeout(timer));
  }

  /** Refresh the occupancy keys of the rooms this instance has members in; see {@link ROOM_STATE_TTL_MS}. */
  #keepRoomStates(): void {
    if (!this.#claims || !this.#up) return;
    for (const room of this.#rooms) {
      this.#pub.pExpire(occupancyKey(room), ROOM_STATE_TTL_MS).catch((err: unknown) =>
        this.#failed(err)
      );
    }
  }

  /**
   * Wait for pending appends and unsent presence (the goodbye), at most 1 s, then close the
   * connections. Both interfaces' `close` are this one: calling it twice closes once.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#flushMembers();
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    this.#row[C.backplaneUp] = 0;
    const quit = async (client: RedisClient) => {
      try {
        if (client.isReady) await client.close();
        else client.destroy();
      } catch (err) {
        this.#failed(err);
      }
    };
    const settled = new Promise<void>((resolve) => {
      if (this.#pending.length === 0) resolve();
      else this.#idle.push(resolve);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS));
    await Promise.race([
      settled.then(() => Promise.all([quit(this.#pub), quit(this.#sub)])),
      timeout,
    ]);
    clearTimeout(timer);
    for (const client of [this.#pub, this.#sub]) if (client.isOpen) client.destroy();
  }

  #every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    Deno.unrefTimer(timer);
    this.#timers.push(timer);
  }

  /** Run {@link APPEND_SCRIPT} for one message; resolves with the position Redis gave it. */
  async #runAppend(room: string, event: MessageEvent): Promise<Position> {
    const reply = await this.#eval(APPEND_SCRIPT, {
      keys: [metaKey(room), streamKey(room)],
      arguments: [
        newEpoch(),
        JSON.stringify(event),
        String(Math.max(0, Math.floor(this.#options.retainMessages))),
        this.#ttl,
        roomChannel(room),
        storedPrefix(room),
      ],
    }) as unknown[];
    const [epoch, offset] = reply;
    if (typeof epoch !== "string" || typeof offset !== "number") {
      throw new TypeError(`unexpected reply of the append script: ${JSON.stringify(reply)}`);
    }
    if (this.#rooms.has(room)) this.#epochs.set(room, epoch);
    return { epoch, offset };
  }

  /** A {@link READ_SCRIPT} reply as a page; entries that are not JSON are counted and skipped. */
  #page(room: string, reply: unknown[]): StreamPage {
    const [epoch, head, first] = reply as [string, number, number];
    const messages: MessageEvent[] = [];
    for (let i = 3; i + 1 < reply.length; i += 2) {
      let event: Numbered;
      try {
        event = JSON.parse(reply[i + 1] as string);
      } catch (err) {
        if (!(err instanceof SyntaxError)) throw err;
        this.#row[C.backplaneErrors]!++;
        this.#options.log.debug("stored message ignored", { room, error: err.message });
        continue;
      }
      event.offset = parseInt(reply[i] as string, 10);
      messages.push(event);
    }
    if (this.#rooms.has(room)) this.#epochs.set(room, epoch);
    return { epoch, offset: head, first, lost: 0, messages };
  }

  /**
   * Run a script by its SHA1 once Redis has it, by its text until then. Commands run in the
   * order sent on one connection, so switching from EVAL to EVALSHA keeps every sender's order.
   */
  #eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown> {
    const sha = this.#shas.get(script);
    return (sha ? this.#pub.evalSha(sha, options) : this.#pub.eval(script, options)).catch(
      (err: unknown) => {
        // Someone ran SCRIPT FLUSH: send the texts again and reload the scripts.
        if (err instanceof Error && err.message.startsWith("NOSCRIPT")) this.#loadScripts();
        throw err;
      },
    );
  }

  #loadScripts(): void {
    this.#shas.clear();
    for (const script of [APPEND_SCRIPT, READ_SCRIPT, CLAIM_SCRIPT]) {
      this.#pub.scriptLoad(script).then(
        (sha: string) => this.#shas.set(script, sha),
        (err: unknown) => this.#failed(err),
      );
    }
  }

  /** Appends Redis has not answered for {@link APPEND_TIMEOUT_MS} go out here, unnumbered. */
  #expireAppends(): void {
    const cutoff = Date.now() - APPEND_TIMEOUT_MS;
    for (const op of this.#pending) {
      if (op.at > cutoff) break;
      if (op.state === "sent") op.state = "local";
    }
    this.#drain();
  }

  /**
   * Settle appends from the oldest while their fate is known: a fallback is handed to this
   * instance's receiver (a room it watches) without offset, then `done` is told.
   */
  #drain(): void {
    while (this.#pending.length > 0 && this.#pending[0]!.state !== "sent") {
      const op = this.#pending.shift()!;
      if (op.state === "local") {
        this.#row[C.backplaneDropped]!++;
        if (!this.#closed && this.#rooms.has(op.room)) {
          this.#receiveFrame?.(op.room, this.#epochs.get(op.room) ?? "", op.frame);
        }
      }
      op.done?.(op.position);
    }
    if (this.#pending.length === 0) { for (const resolve of this.#idle.splice(0)) resolve(); }
  }

  /** A payload decoded, or undefined (counted and logged) when it is not what Redis should carry. */
  #decoded<T>(payload: string, decoder: (p: string) => T, ignored: string): T | undefined {
    try {
      return decoder(payload);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      this.#row[C.backplaneErrors]!++;
      this.#options.log.debug(ignored, { error: err.message });
      return undefined;
    }
  }

  /** A control message: skip this node's echo, note who is alive, hand the rest to the hub. */
  readonly #controlListener = (payload: string): void => {
    if (payload.startsWith(this.#selfPrefix)) {
      if (payload.startsWith(`${this.#selfPrefix}"t":"alive"`)) this.#echo(payload);
      return;
    }
    const m = this.#decoded(payload, decode, "backplane message ignored");
    if (m === undefined) return;
    this.#heard(m);
    if (m.t === "alive") return;
    this.#receive?.(m);
  };

  /**
   * A room frame, this instance's own included: the order Redis published them in is the
   * room's one order, so every instance delivers from here.
   */
  readonly #roomListener = (payload: string): void => {
    const m = this.#decoded(payload, decodeRoom, "room frame ignored");
    if (m === undefined) return;
    if (!this.#rooms.has(m.room)) return this.#strayed(m.room);
    if (m.t === "stored") {
      this.#epochs.set(m.room, m.epoch);
      const event: Numbered = m.event;
      event.offset = m.offset;
      this.#receiveFrame?.(m.room, m.epoch, event);
    } else if (m.t === "binary") {
      this.#receiveFrame?.(m.room, this.#epochs.get(m.room) ?? "", m.data);
    } else {
      // An instance of another chorus version on the same Redis.
      this.#row[C.backplaneErrors]!++;
      this.#options.log.debug("room frame ignored", { t: String((m as { t: unknown }).t) });
    }
  };

  /**
   * A frame of a room this instance let go: in flight when it unsubscribed, or resubscribed
   * by node-redis after a reconnect because the unsubscribe could not be sent. Drop it, and
   * unsubscribe again once.
   */
  #strayed(room: string): void {
    if (this.#stray.has(room)) return;
    this.#stray.add(room);
    this.#unsubscribe(room);
  }

  #heard(m: Wire): void {
    if (m.node === BACKPLANE_NODE) return;
    if (m.t === "bye") {
      this.#peers.delete(m.node);
      return;
    }
    this.#peers.set(m.node, Date.now());
    if (this.#expired.delete(m.node)) {
      // It was declared gone but was only cut off: every instance answers with its members.
      this.#options.log.info("instance back", { node: m.node });
      this.#sendSync();
    }
  }

  /** Subscribe to a room's channel; never rejects. */
  async #subscribeRoom(room: string): Promise<void> {
    try {
      await this.#sub.subscribe(roomChannel(room), this.#roomListener);
    } catch (err) {
      this.#failed(err);
    }
  }

  #unsubscribe(room: string): void {
    if (!this.#sub.isReady) return; // node-redis drops what it could not send; see #roomListener
    this.#sub.unsubscribe(roomChannel(room), this.#roomListener).catch((err: unknown) =>
      this.#failed(err)
    );
  }

  #send(channel: string, m: Wire): void {
    if (!this.#up) {
      this.#row[C.backplaneDropped]!++;
      return;
    }
    this.#pub.publish(channel, encode(m)).catch((err: unknown) => this.#dropped(err));
  }

  #sendSync(): void {
    this.#send(CONTROL_CHANNEL, { t: "sync", node: this.#self });
  }

  #flushMembers(): void {
    clearTimeout(this.#membersTimer);
    this.#membersTimer = undefined;
    const m = this.#pendingMembers;
    this.#pendingMembers = undefined;
    if (m) this.#send(CONTROL_CHANNEL, m);
  }

  #heartbeat(): void {
    if (this.#up) {
      this.#send(CONTROL_CHANNEL, { t: "alive", node: this.#self, at: Date.now() });
    }
  }

  /**
   * This node's heartbeat came back: everything published before it was sent has been heard,
   * so an instance last heard {@link PEER_EXPIRY_MS} before that is gone.
   */
  #echo(payload: string): void {
    const m = decode(payload);
    if (m.t !== "alive" || m.at <= (this.#echoAt ?? -Infinity)) return;
    this.#echoAt = m.at;
    const now = Date.now();
    for (const [node, at] of this.#expired) {
      if (now - at > 3600_000) this.#expired.delete(node); // long gone: forget it
    }
    for (const [node, seen] of this.#peers) {
      if (m.at - seen <= PEER_EXPIRY_MS) continue;
      this.#peers.delete(node);
      this.#expired.set(node, now);
      this.#options.log.warn("instance expired", { node, silentMs: m.at - seen });
      this.#receive?.({ t: "bye", node });
    }
  }

  /** Follow the connections' state: log and count changes, resync after each (re)connect. */
  #check(): void {
    const up = !this.#closed && this.#pub.isReady && this.#sub.isReady;
    if (up === this.#up) return;
    this.#up = up;
    this.#row[C.backplaneUp] = up ? 1 : 0;
    this.#shas.clear(); // a restarted Redis has no scripts
    const url = redactUrl(this.#options.url);
    if (!up) {
      if (!this.#closed) this.#options.log.warn("backplane lost", { url, error: this.#lastError });
      return;
    }
    if (this.#everUp) {
      this.#row[C.backplaneReconnects]!++;
      this.#options.log.info("backplane recovered", { url });
    } else {
      this.#options.log.info("backplane connected", { url });
    }
    this.#everUp = true;
    void this.#resync(++this.#generation);
  }

  /**
   * After a (re)connect: nobody was heard while down, so restart every peer's expiry clock;
   * ask every instance for its members and send ours; resubscribe our rooms' channels, and only
   * then tell the hub (`sync` from {@link BACKPLANE_NODE}): it answers with its members and
   * catches every room up from its last delivered offset, which must not miss a frame
   * published between that read and the subscription.
   */
  async #resync(generation: number): Promise<void> {
    const now = Date.now();
    for (const node of this.#peers.keys()) this.#peers.set(node, now);
    this.#stray.clear();
    this.#loadScripts();
    try {
      await this.#sub.subscribe(CONTROL_CHANNEL, this.#controlListener);
    } catch (err) {
      this.#failed(err);
      return;
    }
    this.#sendSync();
    await Promise.all([...this.#rooms].map((room) => this.#subscribeRoom(room)));
    // Lost again meanwhile: the next connect resyncs, and tells the hub then.
    if (!this.#up || generation !== this.#generation) return;
    this.#receive?.({ t: "sync", node: BACKPLANE_NODE });
  }

  /** A command failed or a connection broke: count it, and re-check the connections. */
  #failed(err: unknown): void {
    if (this.#closed) return;
    this.#row[C.backplaneErrors]!++;
    this.#lastError = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.#options.log.debug("backplane error", { error: this.#lastError });
    if (!this.#everUp && !this.#warnedAtStart) {
      // Never connected yet (wrong address, password, or Redis not up): say so once.
      this.#warnedAtStart = true;
      this.#options.log.warn("backplane unreachable", {
        url: redactUrl(this.#options.url),
        error: this.#lastError,
      });
    }
    this.#check();
  }

  #dropped(err: unknown): void {
    this.#row[C.backplaneDropped]!++;
    this.#failed(err);
  }
}
