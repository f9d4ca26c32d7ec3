/**
 * The SSE + HTTP adapter: where a WebSocket cannot get through, `GET /ROOM` with
 * `Accept: text/event-stream` makes a hub {@link Member} whose events arrive as server-sent
 * events ({@link SsePeer}), and `POST /ROOM` with its session acts as that member. A stream is
 * admitted by the same checks and connection limits as an upgrade, and a POST passes the same
 * size, rate and validation checks as a WebSocket frame; only the answers differ (HTTP
 * statuses instead of `error` events and close frames).
 * @module
 */
import { actOnEvent } from "./act.ts";
import type { Config } from "./config.ts";
import { closeAtExpiry } from "./connection.ts";
import { corsHeaders, withHeaders } from "./cors.ts";
import { httpError, readAtMost } from "./http.ts";
import type { Hub, Member } from "./hub.ts";
import { C } from "./metrics.ts";
import { TokenBucket } from "./ratelimit.ts";
import { nodeOfSession, type PostResult, SessionRelay, Sessions } from "./sessions.ts";
import { SsePeer } from "./sse_peer.ts";
import { lastEventId, SSE_PING_MS, SseEncoder } from "./sse_wire.ts";
import {
  type Admitted,
  checkMember,
  identify,
  originAllowed,
  parseResume,
  refusalResponse,
  type Refused,
  type UpgradeChecks,
} from "./upgrade.ts";

/** What the adapter is built from. */
export interface SseDeps {
  config: Pick<Config, "allowedOrigins" | "maxMessageBytes" | "rateLimit" | "rateBurst">;
  hub: Hub;
  /**
   * The `BroadcastChannel` the workers of one process relay POSTs over (see
   * {@link SessionRelay}); none for a single-threaded server.
   */
  relayChannel?: string | undefined;
}

/** The event-stream side of one server. */
export interface SseAdapter {
  /** Start the stream of an admitted `GET`, or say which connection limit refused it. */
  accept(req: Request, admitted: Admitted, ip: string): Response | Refused;
  /** Answer `POST /ROOM`: one client event for the member of the request's session. */
  post(req: Request, room: string): Promise<Response>;
  /** Stop the keep-alive timer and leave the relay; the hub closes the streams. */
  close(): void;
}

/** The headers of every event stream: never cached, transformed nor buffered on the way. */
const STREAM_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no",
  connection: "keep-alive",
};

/** `WWW-Authenticate` of a POST without a live session of its room. */
const SESSION_CHALLENGE = { "www-authenticate": 'Bearer realm="chorus"' };

/** Whether a request asks for an event stream rather than the page. */
export function wantsEventStream(req: Request): boolean {
  return req.method === "GET" &&
    (req.headers.get("accept")?.includes("text/event-stream") ?? false);
}

/**
 * Run every check of an event-stream request for `room`: the origin, then what an upgrade
 * checks too ({@link checkMember}). `Last-Event-ID` (what `EventSource` sends when it
 * reconnects) wins over `?offset=&epoch=`; a malformed one is ignored.
 */
export function checkStream(
  checks: UpgradeChecks,
  req: Request,
  room: string,
  ip: string,
): Admitted | Refused | Promise<Admitted | Refused> {
  if (!originAllowed(req, checks.config.allowedOrigins)) return { refused: "bad_origin" };
  const params = new URL(req.url).searchParams;
  const resume = lastEventId(req.headers.get("last-event-id")) ?? parseResume(params);
  const request = { params, headers: req.headers, ip, transport: "sse" } as const;
  return checkMember(checks, request, room, "chat", resume);
}

/** Build the adapter of one server. */
export function createSse(deps: SseDeps): SseAdapter {
  const { hub, config } = deps;
  const row = hub.metrics.row;
  const encoder = new SseEncoder();
  const sessions = new Sessions(hub.node);
  const relay = deps.relayChannel === undefined
    ? undefined
    : new SessionRelay(deps.relayChannel, hub.node, act);
  const peers = new Set<SsePeer>();
  let pinger: ReturnType<typeof setInterval> | undefined;

  /** Act on a POSTed event for a session of this hub (asked here or relayed from a sibling). */
  function act(session: string, room: string, text: string): PostResult {
    const member = sessions.find(session, room);
    if (!member) return { ok: false, code: "invalid_session", message: "no such session here" };
    if (!member.bucket.take()) {
      return { ok: false, code: "rate_limited", message: "too many messages; slow down" };
    }
    const refused = actOnEvent(hub, member, text);
    return refused ? { ok: false, code: refused.code, message: refused.message } : { ok: true };
  }

  /** One shared timer pings every stream while there are any, so none costs a timer. */
  function track(peer: SsePeer): void {
    peers.add(peer);
    pinger ??= setInterval(() => {
      for (const p of peers) p.ping();
    }, SSE_PING_MS);
  }

  function untrack(peer: SsePeer): void {
    peers.delete(peer);
    if (peers.size === 0) {
      clearInterval(pinger);
      pinger = undefined;
    }
  }

  async function answerPost(req: Request, room: string): Promise<Response> {
    const session = bearer(req.headers.get("authorization"));
    if (session === undefined) return postError("invalid_session", "a session is required");
    const foreign = sessions.foreign(session);
    if (!foreign && !sessions.find(session, room)) {
      return postError("invalid_session", "unknown or ended session, or one of another room");
    }
    if (!isJson(req.headers.get("content-type"))) {
      await req.body?.cancel();
      return httpError(415, "unsupported_media_type", "send one event as application/json");
    }
    const body = await readAtMost(req, config.maxMessageBytes);
    row[C.received]!++;
    if (body === null) {
      return httpError(
        413,
        "payload_too_large",
        `an event may be at most ${config.maxMessageBytes} bytes`,
      );
    }
    row[C.bytesIn]! += body.byteLength;
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;
      return postError("invalid_json", "the body is not valid UTF-8");
    }
    const result = !foreign
      ? act(session, room, text)
      : relay
      ? await relay.ask(nodeOfSession(session), session, room, text)
      : { ok: false, code: "invalid_session", message: "unknown session" } as const;
    return result.ok ? accepted() : postError(result.code, result.message);
  }

  return {
    accept(req, admitted, ip) {
      const admission = hub.admit(ip);
      if (admission !== "ok") return { refused: admission };
      const peer = new SsePeer(encoder);
      const { grant } = admitted;
      const { id, name } = identify(admitted, hub.nextId());
      const session = sessions.create();
      const member = new SseMember(
        id,
        name,
        admitted,
        peer,
        ip,
        new TokenBucket(config.rateLimit, config.rateBurst),
        session,
        () => {
          sessions.end(session);
          untrack(peer);
          expiry?.();
        },
      );
      const expiry = grant?.expiresAt === undefined
        ? undefined
        : closeAtExpiry(hub, peer, grant.expiresAt);
      sessions.bind(session, member);
      hub.connect(member);
      track(peer);
      // The reader went away (or stopped reading past the drain time): it leaves at once.
      peer.addEventListener("close", () => void hub.leave(peer, "client"));
      void hub.open(member, admitted.resume);
      const cors = corsHeaders(req, config.allowedOrigins) ?? {};
      return new Response(peer.body, { headers: { ...STREAM_HEADERS, ...cors } });
    },

    async post(req, room) {
      const cors = corsHeaders(req, config.allowedOrigins);
      if (cors === null) {
        await req.body?.cancel();
        return refusalResponse({ refused: "bad_origin" });
      }
      return withHeaders(await answerPost(req, room), cors);
    },

    close() {
      clearInterval(pinger);
      pinger = undefined;
      relay?.close();
    },
  };
}

/** A hub member on an event stream; its events go out through {@link SsePeer}. */
class SseMember implements Member {
  readonly mode = "chat" as const;
  readonly transport = "sse" as const;
  readonly room: string;
  readonly nameLocked: boolean;
  readonly sub: string | undefined;

  constructor(
    readonly id: string,
    public name: string,
    admitted: Admitted,
    readonly socket: SsePeer,
    readonly ip: string,
    readonly bucket: TokenBucket,
    readonly session: string,
    /** Ends the session, stops the pings and the token-expiry timer. */
    readonly ended: () => void,
  ) {
    this.room = admitted.room;
    this.nameLocked = admitted.nameLocked;
    this.sub = admitted.grant?.sub;
  }
}

/** The answer to a POST whose event was acted on. */
function accepted(): Response {
  return new Response("{}\n", {
    status: 202,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

/** The error answer to a POST: 401, 429 or 400 by code, with a JSON body as every error. */
function postError(
  code: Exclude<PostResult, { ok: true }>["code"],
  message: string,
): Response {
  if (code === "invalid_session") return httpError(401, code, message, SESSION_CHALLENGE);
  if (code === "rate_limited") return httpError(429, code, message, { "retry-after": "1" });
  return httpError(400, code, message);
}

/** The session of an `Authorization: Bearer SESSION` header; undefined without one. */
function bearer(header: string | null): string | undefined {
  const match = header?.match(/^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i);
  return match?.[1];
}

/** Whether a `Content-Type` is JSON (`application/json`, any parameters). */
function isJson(contentType: string | null): boolean {
  if (contentType === null) return false;
  return contentType.split(";", 1)[0]!.trim().toLowerCase() === "application/json";
}
