/**
 * The request handler: routes HTTP requests to the page, `/healthz`, `/metrics`, the API,
 * WebSocket upgrades and event streams with their POSTs. It is a plain function of config and hub, so tests can call it with
 * `new Request(...)`; only the entry points hand it to `Deno.serve`.
 * @module
 */
import type { Verifier } from "./auth.ts";
import type { Config } from "./config.ts";
import { type ConnectHook, unlessClientLeaves } from "./connect_hook.ts";
import { createAccept } from "./connection.ts";
import { type Handler, httpError, json, remoteIp, type RequestInfo } from "./http.ts";
import type { Hub } from "./hub.ts";
import type { Logger } from "./log.ts";
import { corsHeaders, preflight, withHeaders } from "./cors.ts";
import { checkStream, createSse, type SseAdapter, wantsEventStream } from "./sse.ts";
import {
  ADMIN_PATH,
  adminPage,
  ASSET_PREFIX,
  ASSETS,
  CLIENT_LIBRARY,
  CLIENT_LIBRARY_PATH,
  pageAt,
  serveAsset,
} from "./static.ts";
import {
  type Admitted,
  checkUpgrade,
  refusalResponse,
  REFUSALS,
  type Refused,
  type UpgradeChecks,
} from "./upgrade.ts";

export type { Handler, RequestInfo };

/** What the handler is built from. */
export interface HandlerDeps {
  config: Config;
  hub: Hub;
  log: Logger;
  /** Checks connection tokens; without it every upgrade is open to all. */
  verify?: Verifier | undefined;
  /** Asks the application about each connection (`--connect-hook-url`); none asks nobody. */
  connectHook?: ConnectHook | undefined;
  /** Answers everything under `/api`; without it those paths are 404. */
  api?: ApiHandler | undefined;
  /** Path prefix everything is served under, already normalised (`/ws`); `""` for none. */
  basePath?: string | undefined;
  /**
   * Event streams and their POSTs (`src/sse.ts`); the app passes the one it closes at
   * shutdown, and one is made when omitted.
   */
  sse?: SseAdapter | undefined;
}

/**
 * The HTTP API's handler (`src/api.ts`), given the request, the client's address and the URL
 * as routed (without the base path).
 */
export type ApiHandler = (req: Request, ip: string, url: URL) => Promise<Response>;

const ALLOW = { allow: "GET, HEAD" };

/** What a room path answers: the page, an event stream, a POSTed event, a preflight. */
const ROOM_ALLOW = { allow: "GET, HEAD, POST, OPTIONS" };

/** Where the HTTP API lives; a WebSocket upgrade there still joins the room of that name. */
const API_PREFIX = "/api";

/** Build the handler for one server. */
export function createHandler(deps: HandlerDeps): Handler {
  const { hub } = deps;
  const startedAt = Date.now();
  const accept = createAccept(deps);
  const sse = deps.sse ?? createSse({ config: deps.config, hub });
  const checks: UpgradeChecks = {
    config: deps.config,
    verify: deps.verify,
    connectHook: deps.connectHook,
  };
  const basePath = deps.basePath ?? "";
  const page = pageAt(basePath);
  const admin = adminPage(basePath, deps.config.apiKey !== undefined);

  /** Count and log a refused upgrade or event stream, and answer it. */
  function refuse(req: Request, ip: string, refused: Refused): Response {
    const r = REFUSALS[refused.refused];
    hub.metrics.refuse(r.reason);
    deps.log.warn("upgrade refused", {
      status: r.status,
      code: r.code,
      ...refused.fields,
      ip,
      origin: req.headers.get("origin") ?? undefined,
    });
    return refusalResponse(refused);
  }

  /**
   * Admit a connection to `room` through `check`, then `start` it (a WebSocket, an event
   * stream); `start` may still refuse it on the connection limits, whose slot is only taken
   * then. While the connect hook is asked, a client that leaves is let go at once (see
   * {@link unlessClientLeaves}); nothing was reserved for it.
   */
  function admit(
    req: Request,
    ip: string,
    room: string,
    check: typeof checkUpgrade,
    start: (req: Request, admitted: Admitted, ip: string) => Response | Refused,
  ): Response | Promise<Response> {
    const settle = (checked: Admitted | Refused): Response => {
      if ("refused" in checked) return refuse(req, ip, checked);
      const started = start(req, checked, ip);
      return started instanceof Response ? started : refuse(req, ip, started);
    };
    const checked = check(checks, req, room, ip);
    if (!(checked instanceof Promise)) return settle(checked);
    if (checks.connectHook === undefined) return checked.then(settle);
    const signal = req.signal;
    return unlessClientLeaves(checked, signal).then((result) => {
      if (result !== undefined && !signal.aborted) return settle(result);
      deps.log.debug("connection abandoned: the client left while it was checked", { ip, room });
      // nginx's "client closed request": nobody is there to read it.
      return httpError(499, "bad_request", "the client left");
    });
  }

  /** An event stream's answer, with the CORS headers of an origin that may connect. */
  function stream(req: Request, ip: string, room: string): Response | Promise<Response> {
    const cors = corsHeaders(req, deps.config.allowedOrigins) ?? {};
    const answer = admit(req, ip, room, checkStream, sse.accept);
    return answer instanceof Promise
      ? answer.then((res) => withHeaders(res, cors))
      : withHeaders(answer, cors);
  }

  /** What a room path answers besides the page; undefined for the page. */
  function roomRequest(
    req: Request,
    ip: string,
    room: string,
  ): Response | Promise<Response> | undefined {
    if (wantsEventStream(req)) return stream(req, ip, room);
    if (req.method === "POST") return sse.post(req, room);
    if (req.method !== "OPTIONS") return undefined;
    const cors = corsHeaders(req, deps.config.allowedOrigins);
    return cors === null ? refusalResponse({ refused: "bad_origin" }) : preflight(cors);
  }

  return (req, info) => {
    const url = underBase(new URL(req.url), basePath);
    if (url === null) return httpError(404, "not_found", "not under the base path");
    if (isUpgrade(req)) return admit(req, remoteIp(info), url.pathname, checkUpgrade, accept);
    if (hasTraversal(req.url)) return httpError(404, "not_found", "not found");
    if (url.pathname === API_PREFIX || url.pathname.startsWith(`${API_PREFIX}/`)) {
      return deps.api
        ? deps.api(req, remoteIp(info), url)
        : httpError(404, "not_found", "not found");
    }
    const path = url.pathname;
    const isRoom = path !== "/metrics" && path !== "/healthz" && !path.startsWith(ASSET_PREFIX);
    if (isRoom) {
      const answer = roomRequest(req, remoteIp(info), path);
      if (answer !== undefined) return answer;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const allow = isRoom ? ROOM_ALLOW : ALLOW;
      return httpError(405, "method_not_allowed", `${req.method} is not allowed`, allow);
    }
    if (url.pathname === "/metrics") {
      return new Response(hub.metrics.render(hub.rooms), {
        headers: {
          "content-type": "text/plain; version=0.0.4; charset=utf-8",
          "cache-control": "no-store",
        },
      });
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
    if (url.pathname === CLIENT_LIBRARY_PATH) return serveAsset(req, CLIENT_LIBRARY);
    if (url.pathname.startsWith(ASSET_PREFIX)) {
      const file = ASSETS.get(url.pathname.slice(ASSET_PREFIX.length));
      return file ? serveAsset(req, file) : httpError(404, "not_found", "no such asset");
    }
    if (url.pathname === ADMIN_PATH) return admin(req);
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
  let path = rawUrl.slice(start).split(/[?#]/, 1)[0]!;
  try {
    path = decodeURIComponent(path);
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    return true; // undecodable escapes are never a legitimate page or room path
  }
  return path.split(/[\\/]/).some((seg) => seg === ".." || seg === ".") || path.includes("\0");
}
