/**
 * The request handler: routes HTTP requests, validates WebSocket upgrades and wires each
 * accepted socket into the hub. It is a plain function of config and hub, so tests can call
 * it with `new Request(...)`; only `main.ts` hands it to `Deno.serve`.
 * @module
 */
import { type Grant, roomAllowed, type Verifier } from "./auth.ts";
import type { Config } from "./config.ts";
import type { Hub, Member } from "./hub.ts";
import type { LogFields, Logger } from "./log.ts";
import { C, type RefuseReason, utf8Length } from "./metrics.ts";
import { TokenBucket } from "./ratelimit.ts";
import {
  checkName,
  type Mode,
  negotiateMode,
  parseClientEvent,
  protocolError,
  SUBPROTOCOL,
} from "./protocol.ts";
import { ASSET_PREFIX, ASSETS, pageAt, serveAsset } from "./static.ts";

/** What the handler is built from. */
export interface HandlerDeps {
  config: Config;
  hub: Hub;
  log: Logger;
  /** Checks connection tokens; without it every upgrade is open to all. */
  verify?: Verifier;
  /** Answers everything under `/api`; without it those paths are 404. */
  api?: ApiHandler;
  /** Path prefix everything is served under (see {@link underBase}), normalised; `""` for none. */
  basePath?: string;
}

/** The HTTP API's handler (`src/api.ts`), given the request and the client's address. */
export type ApiHandler = (req: Request, ip: string, url: URL) => Promise<Response>;

/** Connection details Deno passes next to the request; optional for in-process tests. */
export interface RequestInfo {
  remoteAddr?: Deno.Addr;
}

/** A request handler in the shape `Deno.serve` expects. */
export type Handler = (req: Request, info?: RequestInfo) => Response | Promise<Response>;

/** Stable codes of HTTP errors, carried in `{"error": {"code", "message"}}` bodies. */
export type HttpErrorCode =
  | "bad_request"
  | "invalid_name"
  | "unsupported_protocol"
  | "unsupported_version"
  | "method_not_allowed"
  | "not_found"
  | "forbidden_origin"
  | "too_many_connections"
  | "invalid_token"
  | "forbidden_room"
  | "unauthorized"
  | "invalid_room"
  | "payload_too_large"
  | "unsupported_media_type"
  | "shutting_down";

/** A JSON error response; every HTTP error chorus returns has this shape. */
export function httpError(
  status: number,
  code: HttpErrorCode,
  message: string,
  headers: HeadersInit = {},
): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify({ error: { code, message } }) + "\n", { status, headers: h });
}

/** A 200 JSON response that no cache keeps: live state such as `/healthz` and the API. */
export function json(body: unknown, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  h.set("cache-control", "no-store");
  return new Response(JSON.stringify(body) + "\n", { headers: h });
}

const ALLOW = { allow: "GET, HEAD" };

/** Where the HTTP API lives; a WebSocket upgrade there still joins the room of that name. */
const API_PREFIX = "/api";

/** Build the handler for one server. */
export function createHandler(deps: HandlerDeps): Handler {
  const { hub } = deps;
  const startedAt = Date.now();
  const on = listeners(deps);
  const page = pageAt(deps.basePath ?? "");

  return (req, info) => {
    const url = underBase(new URL(req.url), deps.basePath ?? "");
    if (url === null) return httpError(404, "not_found", "not under the base path");
    if (isUpgrade(req)) return upgrade(deps, on, req, url, info);
    if (hasTraversal(req.url)) return httpError(404, "not_found", "not found");
    if (url.pathname === API_PREFIX || url.pathname.startsWith(`${API_PREFIX}/`)) {
      return deps.api
        ? deps.api(req, remoteIp(info), url)
        : httpError(404, "not_found", "not found");
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return httpError(405, "method_not_allowed", `${req.method} is not allowed`, ALLOW);
    }
    if (url.pathname === "/metrics") {
      return new Response(
        hub.metrics.render(hub.rooms),
        {
          headers: {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
            "cache-control": "no-store",
          },
        },
      );
    }
    if (url.pathname === "/healthz") {
      // 200 either way: without Redis the instance still serves its own rooms.
      const backplane = hub.metrics.backplane();
      return json({
        status: backplane === "down" ? "degraded" : "ok",
        ...(backplane === "off" ? {} : { backplane }),
        connections: hub.clusterConnections,
        rooms: hub.rooms,
        uptime: Math.round((Date.now() - startedAt) / 1000),
      });
    }
    if (url.pathname.startsWith(ASSET_PREFIX)) {
      const file = ASSETS.get(url.pathname.slice(ASSET_PREFIX.length));
      return file ? serveAsset(req, file) : httpError(404, "not_found", "no such asset");
    }
    return serveAsset(req, page);
  };
}

/**
 * The request URL as chorus routes it: with `basePath` (`/ws`) removed from the path, so
 * `/ws/lobby` is room `/lobby` and `/ws` or `/ws/` is `/`; null when the path is not under
 * `basePath`. Everything chorus answers, `/healthz`, `/metrics` and `/api` included, lives
 * under it.
 */
function underBase(url: URL, basePath: string): URL | null {
  if (basePath === "") return url;
  const path = url.pathname;
  if (path !== basePath && !path.startsWith(`${basePath}/`)) return null;
  const routed = new URL(url);
  routed.pathname = path.slice(basePath.length) || "/";
  return routed;
}

function isUpgrade(req: Request): boolean {
  return req.headers.get("upgrade")?.toLowerCase().split(",").some((v) =>
    v.trim() === "websocket"
  ) ?? false;
}

/**
 * True when the raw request target climbs out of its directory (`..`, also percent-encoded or
 * with backslashes). `Request.url` keeps the target as sent, before URL normalisation.
 */
export function hasTraversal(rawUrl: string): boolean {
  const start = rawUrl.indexOf("/", rawUrl.indexOf("//") + 2);
  if (start === -1) return false;
  let path = rawUrl.slice(start).split(/[?#]/, 1)[0];
  try {
    path = decodeURIComponent(path);
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    return true; // undecodable escapes are never a legitimate page or room path
  }
  return path.split(/[\\/]/).some((seg) => seg === ".." || seg === ".") || path.includes("\0");
}

/** An upgrade refusal: counted, logged as a warning and answered with a JSON error. */
type Refuse = (
  why: RefuseReason,
  status: number,
  code: HttpErrorCode,
  message: string,
  headers?: HeadersInit,
  fields?: LogFields,
) => Response;

/** `WWW-Authenticate` of a refused token (RFC 6750), which travels in the `token` parameter. */
const TOKEN_CHALLENGE = { "www-authenticate": 'Bearer realm="chorus", error="invalid_token"' };

function upgrade(
  deps: HandlerDeps,
  on: Listeners,
  req: Request,
  url: URL,
  info: RequestInfo | undefined,
): Response | Promise<Response> {
  const { log, config } = deps;
  const ip = remoteIp(info);
  const refuse: Refuse = (why, status, code, message, headers = {}, fields = {}) => {
    deps.hub.metrics.refuse(why);
    log.warn("upgrade refused", {
      status,
      code,
      ...fields,
      ip,
      origin: req.headers.get("origin") ?? undefined,
    });
    return httpError(status, code, message, headers);
  };
  if (req.method !== "GET") {
    return refuse("bad_request", 405, "method_not_allowed", "WebSocket upgrades must use GET", {
      allow: "GET",
    });
  }
  if (req.headers.get("sec-websocket-version") !== "13") {
    return refuse(
      "bad_request",
      426,
      "unsupported_version",
      "only WebSocket version 13 is supported",
      {
        "sec-websocket-version": "13",
      },
    );
  }
  if (!req.headers.get("sec-websocket-key")) {
    return refuse("bad_request", 400, "bad_request", "missing Sec-WebSocket-Key");
  }
  if (!originAllowed(req, config.allowedOrigins)) {
    return refuse("bad_origin", 403, "forbidden_origin", "this origin may not connect");
  }
  const mode = negotiateMode(req.headers.get("sec-websocket-protocol"));
  if (mode === null) {
    return refuse(
      "bad_protocol",
      400,
      "unsupported_protocol",
      `only the "${SUBPROTOCOL}" subprotocol is supported`,
    );
  }
  const rawName = url.searchParams.get("name");
  let name: string | undefined;
  if (rawName !== null) {
    const check = checkName(rawName);
    if (!check.ok) return refuse("bad_name", 400, "invalid_name", check.message);
    name = check.name;
  }
  if (!deps.verify) return accept(deps, on, req, refuse, { ip, url, mode, name });
  const token = url.searchParams.get("token");
  if (token === null || token === "") {
    return refuse(
      "bad_token",
      401,
      "invalid_token",
      "a token is required: add ?token=JWT",
      TOKEN_CHALLENGE,
      { detail: "missing" },
    );
  }
  return deps.verify(token).then((check) => {
    if (!check.ok) {
      return refuse(
        "bad_token",
        401,
        "invalid_token",
        check.message,
        TOKEN_CHALLENGE,
        { detail: check.reason },
      );
    }
    const { grant } = check;
    if (!roomAllowed(grant.rooms, url.pathname)) {
      return refuse(
        "forbidden_room",
        403,
        "forbidden_room",
        "this token may not join this room",
        {},
        { sub: grant.sub, room: url.pathname },
      );
    }
    return accept(deps, on, req, refuse, { ip, url, mode, name: grant.name ?? name, grant });
  });
}

/** An upgrade that passed every check but the connection limits. */
interface Admitted {
  ip: string;
  url: URL;
  mode: Mode;
  name: string | undefined;
  /** What the connection's token allows; undefined without authentication. */
  grant?: Grant;
}

/** Reserve a connection slot, upgrade, and hand the socket to the hub. */
function accept(
  deps: HandlerDeps,
  on: Listeners,
  req: Request,
  refuse: Refuse,
  admitted: Admitted,
): Response {
  const { hub, config } = deps;
  const { ip, url, mode, name, grant } = admitted;
  const admission = hub.admit(ip);
  if (admission === "max_connections") {
    return refuse("max_connections", 503, "too_many_connections", "the server is full", {
      "retry-after": "10",
    });
  }
  if (admission === "shutting_down") {
    return refuse("shutting_down", 503, "shutting_down", "the server is shutting down", {
      "retry-after": "5",
    });
  }
  if (admission === "max_connections_per_ip") {
    return refuse(
      "max_connections_per_ip",
      429,
      "too_many_connections",
      "too many connections from your address",
      {
        "retry-after": "10",
      },
    );
  }

  let socket: WebSocket;
  let response: Response;
  try {
    ({ socket, response } = Deno.upgradeWebSocket(req, {
      protocol: mode === "chat" ? SUBPROTOCOL : undefined,
      idleTimeout: config.idleTimeout,
    }));
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return refuse("bad_request", 400, "bad_request", err.message);
  }
  const seq = hub.nextId();
  const member: Member = {
    // One user connected twice has the same id twice: the hub keys connections by socket.
    id: grant?.sub ?? seq,
    name: name ?? `guest-${seq.split("-").pop()!.padStart(4, "0")}`,
    mode,
    room: url.pathname,
    socket,
    ip,
    bucket: new TokenBucket(config.rateLimit, config.rateBurst),
    nameLocked: grant?.name !== undefined,
    pending: [],
    pendingBytes: 0,
    joined: false,
  };
  hub.register(member);
  attach(hub, on, member, url.searchParams.get("since") ?? undefined);
  if (grant?.expiresAt !== undefined) closeAtExpiry(hub, member, grant.expiresAt);
  return response;
}

/** Longest delay `setTimeout` honours; a longer one would fire at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * Close a member's socket with 4001 when its token expires. One timer per connection,
 * re-armed for expiries beyond `setTimeout`'s range and cleared when the socket closes.
 */
function closeAtExpiry(hub: Hub, member: Member, expiresAt: number): void {
  let timer: ReturnType<typeof setTimeout>;
  const arm = () => {
    const wait = expiresAt - Date.now();
    if (wait > MAX_TIMEOUT_MS) {
      timer = setTimeout(arm, MAX_TIMEOUT_MS);
    } else {
      timer = setTimeout(
        () => hub.drop(member.socket, 4001, "token expired", "token_expired"),
        Math.max(0, wait),
      );
    }
  };
  arm();
  member.socket.addEventListener("close", () => clearTimeout(timer));
}

/** The close reason Deno gives when a peer stopped answering pings (`idleTimeout`). */
const IDLE_CLOSE_REASON = "No response from ping frame.";

/**
 * The socket event listeners of one server, shared by all of its sockets: each listener a
 * socket holds costs Deno about 0.6 KiB, so sockets get two long-lived ones (message, close)
 * and a one-shot `open`, and find their member through the hub.
 */
interface Listeners {
  message(this: WebSocket, e: MessageEvent<string | ArrayBuffer>): void;
  close(this: WebSocket, e: CloseEvent): void;
  /** Frames of open sockets whose join waits for their room (see {@link attach}). */
  early: Map<WebSocket, (string | ArrayBuffer)[]>;
}

function listeners(deps: HandlerDeps): Listeners {
  const { hub, log, config } = deps;
  const row = hub.metrics.row;
  const early = new Map<WebSocket, (string | ArrayBuffer)[]>();
  return {
    early,
    message(e) {
      const member = hub.memberOf(this);
      if (!member) return;
      const data = e.data;
      const bytes = typeof data === "string" ? utf8Length(data) : data.byteLength;
      row[C.received]++;
      row[C.bytesIn] += bytes;
      if (bytes > config.maxMessageBytes) {
        return hub.drop(this, 1009, "message too big", "too_big");
      }
      if (!member.bucket.take()) {
        if (member.mode === "raw") {
          return hub.drop(this, 1008, "rate limit exceeded", "rate_limited");
        }
        return hub.reject(member, protocolError("rate_limited", "too many messages; slow down"));
      }
      const waiting = early.get(this);
      if (waiting) waiting.push(data);
      else act(hub, member, data);
    },
    close(e) {
      early.delete(this);
      const idle = e.reason === IDLE_CLOSE_REASON;
      const member = hub.leave(this, idle ? "idle" : "client");
      if (member && idle) {
        log.warn("connection closed by policy", { reason: "idle", id: member.id, ip: member.ip });
      }
    },
  };
}

/** Relay or interpret a frame that passed the size and rate checks. */
function act(hub: Hub, member: Member, data: string | ArrayBuffer): void {
  if (member.mode === "raw") hub.relayRaw(member, data);
  else onChatFrame(hub, member, data);
}

/**
 * Wire a socket's listeners. It joins its room when it opens; when the hub must first make the
 * room ready (a Redis backplane subscribing and loading history, for the room's first member
 * here), the join waits for that, and the frames the client sends meanwhile are relayed after
 * it, in order. The upgrade itself is answered at once: Deno cannot tell a waiting handler
 * that its client left, and a socket upgraded for a gone client never opens nor closes.
 */
function attach(hub: Hub, on: Listeners, member: Member, since: string | undefined): void {
  const { socket } = member;
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => {
    const ready = hub.ready(member.room);
    if (!ready) return hub.join(member, since);
    on.early.set(socket, []);
    void ready.then(() => {
      const frames = on.early.get(socket) ?? [];
      on.early.delete(socket);
      hub.join(member, since);
      if (member.joined) { for (const data of frames) act(hub, member, data); }
    });
  }, { once: true });
  socket.addEventListener("message", on.message);
  socket.addEventListener("close", on.close);
}

/**
 * Cross-site WebSocket hijacking guard: no Origin (not a browser), an Origin on the same host
 * as the request, or one listed in `--allowed-origins`.
 */
function originAllowed(req: Request, allowed: string[] | "*"): boolean {
  const origin = req.headers.get("origin");
  if (origin === null || allowed === "*") return true;
  if (allowed.includes(origin)) return true;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return false; // "null" and other opaque origins
  }
  return host === req.headers.get("host");
}

function onChatFrame(hub: Hub, member: Member, data: string | ArrayBuffer): void {
  if (typeof data !== "string") {
    hub.reject(member, protocolError("invalid_json", `${SUBPROTOCOL} frames must be text`));
    return;
  }
  const event = parseClientEvent(data);
  switch (event.type) {
    case "error":
      return hub.reject(member, event);
    case "message":
      hub.say(member, event.text);
      return;
    case "rename":
      if (member.nameLocked) {
        return hub.reject(member, protocolError("name_locked", "your token sets your name"));
      }
      return hub.rename(member, event.name);
  }
}

function remoteIp(info: RequestInfo | undefined): string {
  const addr = info?.remoteAddr;
  return addr && (addr.transport === "tcp" || addr.transport === "udp") ? addr.hostname : "unknown";
}
