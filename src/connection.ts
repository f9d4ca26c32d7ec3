/**
 * The WebSocket adapter: turns an admitted upgrade into a hub {@link Member} and a socket whose
 * events drive it. Frames are checked for size and rate here, raw frames are published as
 * they are, and `chorus.v1` frames are parsed into client events at this edge, so the hub
 * only ever sees typed values.
 * @module
 */
import { actOnEvent } from "./act.ts";
import type { Config } from "./config.ts";
import { IDLE_CLOSE_REASON } from "./close.ts";
import type { Hub, Member } from "./hub.ts";
import type { Logger } from "./log.ts";
import { C, utf8Length } from "./metrics.ts";
import { type Mode, protocolError, SUBPROTOCOL } from "./protocol.ts";
import { TokenBucket } from "./ratelimit.ts";
import type { Resume } from "./tail.ts";
import type { Peer } from "./transport.ts";
import { type Admitted, identify, type Refused } from "./upgrade.ts";

/** What the adapter is built from. */
export interface ConnectionDeps {
  config: Pick<
    Config,
    "idleTimeout" | "maxMessageBytes" | "maxBufferedBytes" | "rateLimit" | "rateBurst"
  >;
  hub: Hub;
  log: Logger;
}

/** Upgrades an admitted request, or says which connection limit refused it. */
export type Accept = (req: Request, admitted: Admitted, ip: string) => Response | Refused;

/** Longest delay `setTimeout` honours; a longer one would fire at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Frames an open socket sent before its room was ready, held until it joins; they count
 * against `--max-buffered-bytes` like frames queued for the socket.
 */
interface Early {
  frames: (string | ArrayBuffer)[];
  bytes: number;
}

/**
 * The adapter of one server. Its sockets share two long-lived listeners (each listener a
 * socket holds costs Deno about 0.6 KiB) and a one-shot `open`; they find their member
 * through the hub.
 */
export function createAccept(deps: ConnectionDeps): Accept {
  const { hub, log, config } = deps;
  const row = hub.metrics.row;
  const early = new Map<WebSocket, Early>();

  function onMessage(this: WebSocket, e: MessageEvent<string | ArrayBuffer>): void {
    const member = hub.memberOf(this);
    if (!member) return;
    const data = e.data;
    const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
    row[C.received]!++;
    row[C.bytesIn]! += bytes;
    if (bytes > config.maxMessageBytes) return hub.drop(this, "too_big");
    if (!member.bucket.take()) {
      if (member.mode === "raw") return hub.drop(this, "rate_limited");
      return hub.reject(member, protocolError("rate_limited", "too many messages; slow down"));
    }
    const waiting = early.get(this);
    if (waiting === undefined) return act(hub, member, data);
    waiting.frames.push(data);
    waiting.bytes += bytes;
    if (waiting.bytes > config.maxBufferedBytes) hub.drop(this, "rate_limited");
  }

  function onClose(this: WebSocket, e: CloseEvent): void {
    const idle = e.reason === IDLE_CLOSE_REASON;
    const member = hub.leave(this, idle ? "idle" : "client");
    if (member && idle) {
      log.warn("connection closed by policy", { reason: "idle", id: member.id, ip: member.ip });
    }
  }

  /**
   * Join the socket's room when it opens. When the hub must first make the room ready (a Redis
   * backplane subscribing and loading history, for the room's first member here), the frames
   * the client sends meanwhile are held and acted on after the join, in order. The upgrade
   * itself is answered at once: Deno cannot tell a waiting handler that its client left.
   */
  function onOpen(member: Member, resume: Resume | undefined): void {
    const joining = hub.open(member, resume);
    if (joining === undefined) return;
    const socket = member.socket as WebSocket;
    early.set(socket, { frames: [], bytes: 0 });
    void joining.then(() => {
      const held = early.get(socket);
      early.delete(socket);
      if (held && hub.joined(member)) { for (const data of held.frames) act(hub, member, data); }
    });
  }

  return (req, admitted, ip) => {
    const admission = hub.admit(ip);
    if (admission !== "ok") return { refused: admission };
    let socket: WebSocket;
    let response: Response;
    try {
      ({ socket, response } = Deno.upgradeWebSocket(req, {
        ...(admitted.mode === "chat" ? { protocol: SUBPROTOCOL } : {}),
        idleTimeout: config.idleTimeout,
      }));
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;
      hub.release(ip);
      return { refused: "bad_upgrade", message: err.message };
    }
    const { grant } = admitted;
    const { id, name } = identify(admitted, hub.nextId());
    const member = new WebSocketMember(
      id,
      name,
      admitted,
      socket,
      ip,
      new TokenBucket(config.rateLimit, config.rateBurst),
      early,
      grant?.expiresAt === undefined ? undefined : closeAtExpiry(hub, socket, grant.expiresAt),
    );
    hub.connect(member);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => onOpen(member, admitted.resume), { once: true });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", onClose);
    return response;
  };
}

/**
 * A hub member on a WebSocket. A class rather than an object literal with an `ended` closure:
 * idle connections are most of a server's memory, and a shared method costs nothing per
 * connection.
 */
class WebSocketMember implements Member {
  readonly mode: Mode;
  readonly room: string;
  readonly nameLocked: boolean;
  readonly sub: string | undefined;

  constructor(
    readonly id: string,
    public name: string,
    admitted: Admitted,
    readonly socket: WebSocket,
    readonly ip: string,
    readonly bucket: TokenBucket,
    /** The adapter's frames held until joins, shared by all its members. */
    readonly early: Map<WebSocket, Early>,
    /** Cancels the token-expiry close; undefined without a token that expires. */
    readonly cancelExpiry: (() => void) | undefined,
  ) {
    this.mode = admitted.mode;
    this.room = admitted.room;
    this.nameLocked = admitted.nameLocked;
    this.sub = admitted.grant?.sub;
  }

  /** Drop what the adapter holds for this member: its held frames and its expiry timer. */
  ended(): void {
    this.early.delete(this.socket);
    this.cancelExpiry?.();
  }
}

/**
 * Close a peer (a socket, an event stream) with 4001 when its token expires. One timer per connection, re-armed for
 * expiries beyond `setTimeout`'s range. Returns what cancels it, which the member's `ended`
 * calls on every way out.
 */
export function closeAtExpiry(hub: Hub, socket: Peer, expiresAt: number): () => void {
  let timer: ReturnType<typeof setTimeout>;
  const arm = () => {
    const wait = expiresAt - Date.now();
    timer = wait > MAX_TIMEOUT_MS
      ? setTimeout(arm, MAX_TIMEOUT_MS)
      : setTimeout(() => hub.drop(socket, "token_expired"), Math.max(0, wait));
  };
  arm();
  return () => clearTimeout(timer);
}

/** Relay or interpret a frame that passed the size and rate checks. */
function act(hub: Hub, member: Member, data: string | ArrayBuffer): void {
  if (member.mode === "raw") {
    hub.publish(member.room, data, member);
    return;
  }
  if (typeof data !== "string") {
    return hub.reject(member, protocolError("invalid_json", `${SUBPROTOCOL} frames must be text`));
  }
  const refused = actOnEvent(hub, member, data);
  if (refused) hub.reject(member, refused);
}
