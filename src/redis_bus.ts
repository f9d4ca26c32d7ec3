/**
 * The Redis backplane of `--redis-url`: a {@link Bus} over Redis pub/sub that makes chorus
 * instances behind a load balancer one hub, and each room's history kept in a Redis list so an
 * instance that starts later still has it. `docs/scaling.md` is the prose twin of this file.
 *
 * Channels carry each room's hash tag (`chorus:{/lobby}:events`), so every key and channel of a
 * room lives on one Redis Cluster slot and the design can move to sharded pub/sub.
 * @module
 */
import { createClient } from "redis";
import type { Bus, BusMessage } from "./bus.ts";
import type { Logger } from "./log.ts";
import { C, type Metrics } from "./metrics.ts";
import type { MessageEvent } from "./protocol.ts";

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

/**
 * How often an instance with members in a room renews its history's expiry. A stored history
 * expires `--history-ttl` seconds plus this after the last message or renewal.
 */
export const HISTORY_REFRESH_MS = 30_000;

/** Longest a new member waits for its room's subscription and history before joining anyway. */
export const WATCH_TIMEOUT_MS = 2000;

/** Reconnect backoff: doubles from the first delay up to the last, plus up to 20% jitter. */
export const RECONNECT_BACKOFF_MS = [100, 2000] as const;

/**
 * Member lists (answers to `sync`) wait this long, so the many `sync`s after a Redis restart
 * are answered with one list per instance rather than one per asker.
 */
export const MEMBERS_DELAY_MS = 250;

/** Longest `close()` waits for unsent commands (the goodbye) before cutting the connections. */
const CLOSE_TIMEOUT_MS = 1000;

/**
 * Commands node-redis may hold unanswered (Redis hung with the connection open); more are
 * dropped. Commands have no timeout of their own: node-redis' default 5 s would silently drop
 * messages queued while a busy event loop had no turn to write them.
 */
const MAX_QUEUED_COMMANDS = 100_000;

/** Presence, heartbeats and resyncs of every instance: one channel all instances hear. */
export const CONTROL_CHANNEL = "chorus:{control}";

/** The channel of one room's messages; heard only by instances with members in the room. */
export function roomChannel(room: string): string {
  return `chorus:{${room}}:events`;
}

/** The Redis list of one room's recent chat messages (JSON `message` events, oldest first). */
export function historyKey(room: string): string {
  return `chorus:{${room}}:history`;
}

/**
 * Store a chat message in its room's capped history and publish it, atomically and in one
 * reply (a MULTI costs six). KEYS[1] is the history, ARGV the stored event, the cap, the
 * expiry in ms, the channel and the published message.
 */
export const STORE_AND_PUBLISH = `redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('PUBLISH', ARGV[4], ARGV[5])`;

/** The `node` of messages the bus makes up itself (stored history, resync requests). */
export const BACKPLANE_NODE = "redis";

/**
 * What crosses Redis: the bus's messages plus the heartbeat, which stays in this module; `at`
 * is when its sender sent it, by the sender's clock (only the sender reads it).
 */
export type Wire = BusMessage | { t: "alive"; node: string; at: number };

/**
 * A message as published: JSON with `node` first, so a receiver can skip its own echo without
 * parsing it, and binary data in base64.
 */
export function encode(m: Wire): string {
  if (m.t === "binary") {
    const { node, data, ...rest } = m;
    return JSON.stringify({ node, ...rest, data: data.toBase64() });
  }
  const { node, ...rest } = m;
  return JSON.stringify({ node, ...rest });
}

/** The inverse of {@link encode}; throws `SyntaxError` for anything that is not JSON. */
export function decode(payload: string): Wire {
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

/** What a {@link RedisBus} needs; all of it comes from the config in production. */
export interface RedisBusOptions {
  /** `--redis-url`. */
  url: string;
  /**
   * The id of the hub on this bus ({@link Hub.node}): its heartbeats carry it, and its own
   * messages coming back from Redis are recognised by it.
   */
  node: string;
  /** `--history`: messages kept per room; 0 stores none. */
  history: number;
  /** `--history-ttl` in milliseconds. */
  historyTtlMs: number;
  log: Logger;
  /** The hub's counters; the bus writes the `backplane` slots of its row. */
  metrics: Metrics;
}

type RedisClient = ReturnType<typeof createClient>;

/** Delay before reconnect attempt `retries` (0-based). */
function backoff(retries: number): number {
  const [first, last] = RECONNECT_BACKOFF_MS;
  const delay = Math.min(last, first * 2 ** Math.min(retries, 20));
  return Math.round(delay * (1 + Math.random() * 0.2));
}

/**
 * A {@link Bus} over Redis: one connection publishes (and stores history), one subscribes to
 * the control channel and to the channels of the rooms this instance has members in.
 */
export class RedisBus implements Bus {
  readonly #options: RedisBusOptions;
  readonly #row: Float64Array;
  readonly #pub: RedisClient;
  readonly #sub: RedisClient;
  #receive: ((message: BusMessage) => void) | undefined;
  /** The hub's node id. */
  readonly #self: string;
  /** How this node's messages start on the wire, to skip their echo. */
  readonly #selfPrefix: string;
  /** When this node sent the latest heartbeat it has heard back; see {@link PEER_EXPIRY_MS}. */
  #echoAt: number | undefined;
  #up = false;
  /** The SHA1 of {@link STORE_AND_PUBLISH} once Redis has it; EVAL with the text until then. */
  #scriptSha: string | undefined;
  #everUp = false;
  /** Set once the first failure to reach Redis at start has been logged. */
  #warnedAtStart = false;
  #closed = false;
  #lastError = "";
  /** Rooms this instance has members in. */
  readonly #rooms = new Set<string>();
  /** Rooms heard from after this instance let them go, already unsubscribed once more. */
  readonly #stray = new Set<string>();
  /** Rooms whose history is being read: the messages that crossed the bus meanwhile. */
  readonly #loading = new Map<string, MessageEvent[]>();
  /** Other instances, by node, with when they were last heard from. */
  readonly #peers = new Map<string, number>();
  /** Instances declared gone, with when: hearing one again asks for its members. */
  readonly #expired = new Map<string, number>();
  #pendingMembers: BusMessage | undefined;
  #membersTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #timers: ReturnType<typeof setInterval>[] = [];

  constructor(options: RedisBusOptions) {
    this.#options = options;
    this.#self = options.node;
    this.#selfPrefix = `{"node":${JSON.stringify(options.node)},`;
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
    if (options.history > 0) this.#every(HISTORY_REFRESH_MS, () => this.#refreshHistories());
  }

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
      case "message":
        this.#loading.get(m.room)?.push(m.event);
        return this.#sendMessage(m);
      case "binary":
        return this.#send(roomChannel(m.room), m);
      case "history":
        return; // made by the bus, never published
      default:
        // join, leave, rename, bye: a list of members still waiting must go out before them.
        this.#flushMembers();
        return this.#send(CONTROL_CHANNEL, m);
    }
  }

  subscribe(receive: (message: BusMessage) => void): void {
    this.#receive = receive;
  }

  async watch(room: string): Promise<void> {
    this.#rooms.add(room);
    this.#stray.delete(room);
    if (!this.#up) return; // subscribed and loaded when Redis is back
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, WATCH_TIMEOUT_MS));
    await Promise.race([this.#prepare(room), timeout]);
    clearTimeout(timer);
  }

  unwatch(room: string): void {
    this.#rooms.delete(room);
    this.#loading.delete(room);
    this.#unsubscribe(room);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS));
    await Promise.race([Promise.all([quit(this.#pub), quit(this.#sub)]), timeout]);
    clearTimeout(timer);
    for (const client of [this.#pub, this.#sub]) if (client.isOpen) client.destroy();
  }

  #every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    Deno.unrefTimer(timer);
    this.#timers.push(timer);
  }

  /** A message from Redis: skip this node's echo, note who is alive, hand the rest to the hub. */
  readonly #listener = (payload: string): void => {
    if (payload.startsWith(this.#selfPrefix)) {
      if (payload.startsWith(`${this.#selfPrefix}"t":"alive"`)) this.#echo(payload);
      return;
    }
    let m: Wire;
    try {
      m = decode(payload);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      this.#row[C.backplaneErrors]!++;
      this.#options.log.debug("backplane message ignored", { error: err.message });
      return;
    }
    this.#heard(m);
    if (m.t === "alive") return;
    if (m.t === "message" || m.t === "binary") {
      if (!this.#rooms.has(m.room)) return this.#strayed(m.room);
      if (m.t === "message") this.#loading.get(m.room)?.push(m.event);
    }
    this.#receive?.(m);
  };

  /**
   * A message of a room this instance let go: in flight when it unsubscribed, or resubscribed
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

  /** Subscribe to a room's channel, then load its history; never rejects. */
  async #prepare(room: string): Promise<void> {
    try {
      await this.#sub.subscribe(roomChannel(room), this.#listener);
      if (this.#rooms.has(room)) await this.#load(room);
    } catch (err) {
      this.#failed(err);
    }
  }

  /**
   * Read a room's stored history and hand it to the hub as a `history` message, with the
   * messages that crossed the bus while it was read appended (each once).
   */
  async #load(room: string): Promise<void> {
    if (this.#options.history === 0) return;
    const seen: MessageEvent[] = [];
    this.#loading.set(room, seen);
    const key = historyKey(room);
    let stored: string[];
    try {
      [stored] = await Promise.all([
        this.#pub.lRange(key, 0, -1),
        this.#pub.pExpire(key, this.#historyTtl()),
      ]);
    } finally {
      if (this.#loading.get(room) === seen) this.#loading.delete(room);
    }
    if (!this.#rooms.has(room)) return;
    const events: MessageEvent[] = [];
    for (const line of stored) {
      try {
        events.push(JSON.parse(line));
      } catch (err) {
        if (!(err instanceof SyntaxError)) throw err;
        this.#row[C.backplaneErrors]!++;
      }
    }
    const ids = new Set(events.map((e) => e.id));
    for (const e of seen) if (!ids.has(e.id)) events.push(e);
    this.#receive?.({ t: "history", node: BACKPLANE_NODE, room, events });
  }

  #unsubscribe(room: string): void {
    if (!this.#sub.isReady) return; // node-redis drops what it could not send; see #listener
    this.#sub.unsubscribe(roomChannel(room), this.#listener).catch((err: unknown) =>
      this.#failed(err)
    );
  }

  #historyTtl(): number {
    return this.#options.historyTtlMs + HISTORY_REFRESH_MS;
  }

  /**
   * A chat message: stored in the room's history and published by {@link STORE_AND_PUBLISH}.
   * Commands run in the order sent on one connection, so switching from EVAL to EVALSHA once
   * the script is loaded keeps every sender's order.
   */
  #sendMessage(m: Extract<BusMessage, { t: "message" }>): void {
    if (this.#options.history === 0) return this.#send(roomChannel(m.room), m);
    if (!this.#up) {
      this.#row[C.backplaneDropped]!++;
      return;
    }
    const options = {
      keys: [historyKey(m.room)],
      arguments: [
        JSON.stringify(m.event),
        String(this.#options.history),
        String(this.#historyTtl()),
        roomChannel(m.room),
        encode(m),
      ],
    };
    const sha = this.#scriptSha;
    (sha ? this.#pub.evalSha(sha, options) : this.#pub.eval(STORE_AND_PUBLISH, options))
      .catch((err: unknown) => {
        // Someone ran SCRIPT FLUSH: send the text again and reload the script.
        if (err instanceof Error && err.message.startsWith("NOSCRIPT")) this.#loadScript();
        this.#dropped(err);
      });
  }

  #loadScript(): void {
    this.#scriptSha = undefined;
    if (this.#options.history === 0) return;
    this.#pub.scriptLoad(STORE_AND_PUBLISH).then(
      (sha: string) => this.#scriptSha = sha,
      (err: unknown) => this.#failed(err),
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

  #refreshHistories(): void {
    if (!this.#up) return;
    for (const room of this.#rooms) {
      this.#pub.pExpire(historyKey(room), this.#historyTtl()).catch((err: unknown) =>
        this.#failed(err)
      );
    }
  }

  /** Follow the connections' state: log and count changes, resync after each (re)connect. */
  #check(): void {
    const up = !this.#closed && this.#pub.isReady && this.#sub.isReady;
    if (up === this.#up) return;
    this.#up = up;
    this.#row[C.backplaneUp] = up ? 1 : 0;
    this.#scriptSha = undefined; // a restarted Redis has no scripts
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
    void this.#resync();
  }

  /**
   * After a (re)connect: nobody was heard while down, so restart every peer's expiry clock;
   * ask every instance for its members and send ours; resubscribe and reload our rooms.
   */
  async #resync(): Promise<void> {
    const now = Date.now();
    for (const node of this.#peers.keys()) this.#peers.set(node, now);
    this.#stray.clear();
    this.#loadScript();
    try {
      await this.#sub.subscribe(CONTROL_CHANNEL, this.#listener);
    } catch (err) {
      this.#failed(err);
      return;
    }
    this.#sendSync();
    this.#receive?.({ t: "sync", node: BACKPLANE_NODE }); // the hub answers with its members
    await Promise.all([...this.#rooms].map((room) => this.#prepare(room)));
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
