/**
 * The HTTP API under `/api`, for backends rather than browsers: push a message into a room
 * with one request, list rooms and their members. Every request carries the API key as a
 * bearer token; `docs/api.md` is the prose twin of this file.
 * @module
 */
import { constantTimeEqual, parseRoom } from "./auth.ts";
import type { Hub, Published } from "./hub.ts";
import type { Logger } from "./log.ts";
import { checkName, type MemberInfo } from "./protocol.ts";
import type { StreamQuery } from "./store.ts";
import { httpError, json, readAtMost } from "./http.ts";
import type { ApiHandler } from "./server.ts";

/** What the API is built from. */
export interface ApiDeps {
  /** The key every request must present as `Authorization: Bearer KEY`. */
  apiKey: string;
  /** Largest body `POST /api/publish` takes, in bytes (`--max-message-bytes`). */
  maxMessageBytes: number;
  hub: Hub;
  log: Logger;
}

/** The member id published messages come from, so clients can tell them from members'. */
export const PUBLISHER_ID = "server";

/** The publisher's display name when the request names none. */
export const DEFAULT_PUBLISHER_NAME = "server";

/** The challenge of a request without credentials (RFC 6750). */
const CHALLENGE = 'Bearer realm="chorus"';

/** Build the API handler; `src/app.ts` builds one only when an API key is configured. */
export function createApi(deps: ApiDeps): ApiHandler {
  const { hub, log } = deps;
  return async (req, ip, url) => {
    const denied = checkKey(req.headers.get("authorization"), deps.apiKey);
    if (denied !== null) {
      log.warn("api request refused", { status: 401, code: "unauthorized", detail: denied, ip });
      return httpError(
        401,
        "unauthorized",
        denied === "missing" ? "send Authorization: Bearer API_KEY" : "wrong API key",
        {
          "www-authenticate": denied === "missing"
            ? CHALLENGE
            : `${CHALLENGE}, error="invalid_token"`,
        },
      );
    }
    switch (url.pathname) {
      case "/api/publish":
        return req.method === "POST" ? await publish(deps, req, url, ip) : notAllowed("POST");
      case "/api/rooms":
        return req.method === "GET" ? listRooms(hub) : notAllowed("GET");
      case "/api/rooms/members":
        return req.method === "GET" ? listMembers(hub, url) : notAllowed("GET");
      case "/api/rooms/history":
        return req.method === "GET" ? await roomHistory(hub, url) : notAllowed("GET");
      default:
        return httpError(404, "not_found", "no such API endpoint");
    }
  };
}

/** Why an `Authorization` header does not carry the API key, or null when it does. */
function checkKey(header: string | null, apiKey: string): "missing" | "wrong" | null {
  const match = header?.match(/^Bearer[ \t]+(\S+)[ \t]*$/i);
  if (!match) return "missing";
  return constantTimeEqual(match[1]!, apiKey) ? null : "wrong";
}

function notAllowed(allow: string): Response {
  return httpError(405, "method_not_allowed", `use ${allow}`, { allow });
}

/** The `room` query parameter, normalised, or the error response to answer instead. */
function roomParam(url: URL): string | Response {
  const raw = url.searchParams.get("room");
  if (raw === null || raw === "") {
    return httpError(400, "bad_request", "the room query parameter is required, e.g. ?room=/lobby");
  }
  return parseRoom(raw) ??
    httpError(400, "invalid_room", "room must be a path like /lobby (no query, no dot segments)");
}

/** Which kind of message a Content-Type asks for, or null when it is not accepted. */
function bodyKind(contentType: string | null): "text" | "binary" | null {
  const [type, ...params] = (contentType ?? "").split(";").map((p) => p.trim().toLowerCase());
  if (type === "application/octet-stream") return "binary";
  if (type !== "text/plain") return null;
  const charset = params.find((p) => p.startsWith("charset="))?.slice(8).replace(/"/g, "");
  return charset === undefined || charset === "utf-8" || charset === "us-ascii" ? "text" : null;
}

async function publish(deps: ApiDeps, req: Request, url: URL, ip: string): Promise<Response> {
  const room = roomParam(url);
  if (room instanceof Response) return room;
  const from: MemberInfo = { id: PUBLISHER_ID, name: DEFAULT_PUBLISHER_NAME };
  const rawName = url.searchParams.get("name");
  if (rawName !== null) {
    const check = checkName(rawName);
    if (!check.ok) return httpError(400, "invalid_name", check.message);
    from.name = check.name;
  }
  const moderate = moderateParam(url);
  if (moderate instanceof Response) return moderate;
  const kind = bodyKind(req.headers.get("content-type"));
  if (kind === null) {
    await req.body?.cancel();
    return httpError(
      415,
      "unsupported_media_type",
      "send text/plain (UTF-8) for a text message or application/octet-stream for binary",
    );
  }
  const body = await readAtMost(req, deps.maxMessageBytes);
  if (body === null) {
    return httpError(
      413,
      "payload_too_large",
      `the body is over --max-message-bytes (${deps.maxMessageBytes} bytes)`,
    );
  }
  let data: string | ArrayBuffer = body.buffer;
  if (kind === "text") {
    try {
      data = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;
      return httpError(400, "bad_request", "the text/plain body is not valid UTF-8");
    }
  }
  if (typeof data !== "string") {
    const delivered = deps.hub.publish(room, data, from);
    deps.log.debug("published", { room, kind, bytes: body.byteLength, delivered, ip });
    return json({ delivered });
  }
  let delivered = 0;
  const stored = await new Promise<Published>((resolve) => {
    delivered = deps.hub.publish(room, data, from, resolve, moderate);
  });
  if (stored !== null && "code" in stored) {
    deps.log.debug("publish refused", { room, code: stored.code, ip });
    return stored.code === "rejected"
      ? httpError(422, "rejected", stored.message)
      : httpError(503, "hook_unavailable", stored.message, { "retry-after": "1" });
  }
  deps.log.debug("published", { room, kind, bytes: body.byteLength, delivered, ip });
  // Unstored (a full disk, Redis down): delivered all the same, but with no place in the stream.
  return json({ delivered, epoch: stored?.epoch ?? null, offset: stored?.offset ?? null });
}

/**
 * The `moderate` query parameter of a publish: `false` skips the moderation hook (the
 * application's own voice), `true` or none asks it; anything else is a 400.
 */
function moderateParam(url: URL): boolean | Response {
  const raw = url.searchParams.get("moderate");
  if (raw === null || raw === "true") return true;
  if (raw === "false") return false;
  return httpError(400, "bad_request", "moderate must be true or false");
}

function listRooms(hub: Hub): Response {
  const rooms = [...hub.roomCounts()].map(([room, members]) => ({ room, members }));
  return json({ rooms });
}

/** Members per page of `GET /api/rooms/members` when the request names no `limit`. */
export const DEFAULT_MEMBERS_PAGE = 1000;

/** Most members one page of `GET /api/rooms/members` may ask for. */
export const MAX_MEMBERS_PAGE = 10_000;

/** Messages per page of `GET /api/rooms/history` when the request names no `limit`. */
export const DEFAULT_HISTORY_PAGE = 100;

/** Most messages one page of `GET /api/rooms/history` may ask for. */
export const MAX_HISTORY_PAGE = 1000;

/** The `limit` query parameter of a paged endpoint, or the error response to answer instead. */
function limitParam(url: URL, fallback: number, max: number): number | Response {
  const raw = url.searchParams.get("limit");
  const limit = raw === null ? fallback : Number(raw);
  if (!/^\d+$/.test(raw ?? "1") || limit < 1 || limit > max) {
    return httpError(400, "bad_request", `limit must be an integer from 1 to ${max}`);
  }
  return limit;
}

/** An offset query parameter: null when absent, NaN when it is not an integer of at least 0. */
function offsetParam(url: URL, name: string): number | null {
  const raw = url.searchParams.get(name);
  if (raw === null) return null;
  const n = Number(raw);
  return /^\d+$/.test(raw) && Number.isSafeInteger(n) ? n : NaN;
}

/**
 * One page of a room's kept stream: `after=N` pages forwards (oldest first, from the start
 * when neither is given), `before=N` backwards (newest first). `next` is the value of the same
 * parameter for the next page, or null at the end.
 */
async function roomHistory(hub: Hub, url: URL): Promise<Response> {
  const room = roomParam(url);
  if (room instanceof Response) return room;
  const limit = limitParam(url, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE);
  if (limit instanceof Response) return limit;
  const after = offsetParam(url, "after");
  const before = offsetParam(url, "before");
  if (Number.isNaN(after) || Number.isNaN(before)) {
    return httpError(400, "bad_request", "after and before must be integers of at least 0");
  }
  if (after !== null && before !== null) {
    return httpError(400, "bad_request", "give after or before, not both");
  }
  const query: StreamQuery = before !== null ? { before, limit } : { after: after ?? 0, limit };
  const page = await hub.readStream(room, query);
  const last = page.messages.at(-1)?.offset;
  const next = last === undefined
    ? null
    : "before" in query
    ? (last > page.first ? last : null)
    : (last < page.offset ? last : null);
  return json({ room, epoch: page.epoch, offset: page.offset, messages: page.messages, next });
}

function listMembers(hub: Hub, url: URL): Response {
  const room = roomParam(url);
  if (room instanceof Response) return room;
  const limit = limitParam(url, DEFAULT_MEMBERS_PAGE, MAX_MEMBERS_PAGE);
  if (limit instanceof Response) return limit;
  const after = url.searchParams.get("after") ?? undefined;
  const { count, members, next } = hub.memberPage(room, after, limit);
  return json({ room, count, members, next });
}
