/**
 * The HTTP endpoints of the operator's live view, under `/api/admin/`: the stats stream, the
 * room list, the controls (disconnect a member, close a room) and the operator's publish.
 * `src/api.ts` has checked the request's origin and API key before it gets here; this module
 * checks everything else at the edge, so what reaches the hub is valid. Every control is
 * logged at info with the operator's address. `docs/api.md` is the prose twin.
 * @module
 */
import type { CloseOrder, CloseResult } from "./admin.ts";
import type { ClusterStats } from "./admin_stats.ts";
import { type AdminStreams, encodeEvent, MAX_ADMIN_STREAMS } from "./admin_streams.ts";
import { publishMessage } from "./api.ts";
import { isMemberId, MEMBER_ID_RULE, parseRoom } from "./auth.ts";
import { httpError, json, readAtMost } from "./http.ts";
import type { Hub } from "./hub.ts";
import type { Logger } from "./log.ts";
import { utf8Length } from "./metrics.ts";
import { hasControlCharacters } from "./protocol.ts";
import type { ApiHandler } from "./server.ts";

/** Largest JSON body a control takes, in bytes. */
export const MAX_CONTROL_BODY_BYTES = 4096;

/** Longest close reason an operator may give, in characters. */
export const MAX_REASON_LENGTH = 100;

/** Longest close reason in UTF-8 bytes: what a WebSocket close frame has room for. */
export const MAX_REASON_BYTES = 123;

/** Store reads `GET /api/admin/rooms` has in flight at once, for rooms held by other nodes. */
export const ROOM_READS_IN_FLIGHT = 64;

/** The headers of the stats stream: an event stream nothing caches, transforms or buffers. */
const STREAM_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-store, no-transform",
  "x-accel-buffering": "no",
};

/** What the admin endpoints are built from (see `src/admin.ts`). */
export interface AdminApiDeps {
  hub: Hub;
  log: Logger;
  stats: ClusterStats;
  streams: AdminStreams;
  /** Carry out a control: close here, relay to the other nodes. */
  close(order: CloseOrder): CloseResult;
  /** `--max-message-bytes`, for the operator's publish. */
  maxMessageBytes: number;
}

/** One room of `GET /api/admin/rooms`. */
export interface AdminRoom {
  room: string;
  members: number;
  /** The room's latest offset; null when its stream could not be read. */
  offset: number | null;
  /** Ms of the latest message or member change; null when unknown. */
  lastActivity: number | null;
}

/** The handler of `/api/admin/…`, for `src/api.ts` to call once origin and key are checked. */
export function createAdminApi(deps: AdminApiDeps): ApiHandler {
  return async (req, ip, url) => {
    switch (url.pathname) {
      case "/api/admin/stream":
        return req.method === "GET" ? stream(deps) : notAllowed("GET");
      case "/api/admin/rooms":
        return req.method === "GET"
          ? json({ rooms: await roomList(deps.hub, deps.log) })
          : notAllowed("GET");
      case "/api/admin/disconnect":
        return req.method === "POST" ? await control(deps, req, ip, "kicked") : notAllowed("POST");
      case "/api/admin/close-room":
        return req.method === "POST"
          ? await control(deps, req, ip, "room_closed")
          : notAllowed("POST");
      case "/api/admin/publish":
        return req.method === "POST"
          ? await publishMessage(deps, req, url, ip, true)
          : notAllowed("POST");
      default:
        return httpError(404, "not_found", "no such admin endpoint");
    }
  };
}

function notAllowed(allow: string): Response {
  return httpError(405, "method_not_allowed", `use ${allow}`, { allow });
}

/** `GET /api/admin/stream`: the stats now, then every second, until the server stops. */
function stream(deps: AdminApiDeps): Response {
  const body = deps.streams.open(encodeEvent("stats", deps.stats.snapshot()));
  if (body === null) {
    return httpError(
      503,
      "too_many_connections",
      `at most ${MAX_ADMIN_STREAMS} admin streams may be open at once`,
      { "retry-after": "10" },
    );
  }
  return new Response(body, { headers: STREAM_HEADERS });
}

/**
 * Every room with members on any node, by path, with its latest offset and last activity. A
 * room with members here is answered from this hub's own state; one held only by other nodes
 * costs one read of its stream's newest message ({@link ROOM_READS_IN_FLIGHT} at a time).
 */
export async function roomList(hub: Hub, log: Logger): Promise<AdminRoom[]> {
  const rooms: AdminRoom[] = [];
  const elsewhere: AdminRoom[] = [];
  for (const [room, members] of hub.roomCounts()) {
    const head = hub.head(room);
    const entry = {
      room,
      members,
      offset: head ?? null,
      lastActivity: hub.lastActivity(room) ?? null,
    };
    rooms.push(entry);
    if (head === undefined) elsewhere.push(entry);
  }
  let next = 0;
  const reader = async () => {
    while (next < elsewhere.length) {
      const entry = elsewhere[next++]!;
      try {
        const page = await hub.readStream(entry.room, { last: 1 });
        entry.offset = page.offset;
        const ts = page.messages.at(-1)?.ts;
        if (ts !== undefined) entry.lastActivity = Math.max(entry.lastActivity ?? 0, ts);
      } catch (err) {
        if (!(err instanceof Error)) throw err;
        // The store cannot be read now (Redis down): the room is listed without an offset.
        log.debug("admin room list: stream unread", { room: entry.room, error: err.message });
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(ROOM_READS_IN_FLIGHT, elsewhere.length) }, reader),
  );
  return rooms;
}

/**
 * `POST /api/admin/disconnect` (`why` = `kicked`) and `POST /api/admin/close-room`
 * (`room_closed`): validate the JSON body, check someone is there to close, close, log.
 */
async function control(
  deps: AdminApiDeps,
  req: Request,
  ip: string,
  why: CloseOrder["why"],
): Promise<Response> {
  const order = await readOrder(req, why);
  if (order instanceof Response) return order;
  const { room, id } = order;
  const present = deps.hub.membersOf(room);
  if (id === null ? present.length === 0 : !present.some((m) => m.id === id)) {
    return id === null
      ? httpError(404, "room_not_found", "nobody is in this room")
      : httpError(404, "member_not_found", "no member with this id is in this room");
  }
  const result = deps.close(order);
  deps.log.info(why === "kicked" ? "admin disconnect" : "admin close room", {
    ip,
    room,
    id: id ?? undefined,
    reason: order.reason ?? undefined,
    ...result,
  });
  return json(result);
}

/** A control's JSON body as an order, or the error response to answer instead. */
async function readOrder(req: Request, why: CloseOrder["why"]): Promise<CloseOrder | Response> {
  const type = req.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    await req.body?.cancel();
    return httpError(415, "unsupported_media_type", "send application/json");
  }
  const bytes = await readAtMost(req, MAX_CONTROL_BODY_BYTES);
  if (bytes === null) {
    return httpError(413, "payload_too_large", `the body is over ${MAX_CONTROL_BODY_BYTES} bytes`);
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    if (!(err instanceof SyntaxError || err instanceof TypeError)) throw err;
    return httpError(400, "invalid_json", "the body is not JSON (UTF-8)");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return httpError(400, "invalid_json", "the body must be a JSON object");
  }
  if (typeof body.room !== "string" || body.room === "") {
    return httpError(400, "invalid_room", 'the body needs "room", a path like /lobby');
  }
  const room = parseRoom(body.room);
  if (room === null) {
    return httpError(
      400,
      "invalid_room",
      "room must be a path like /lobby (no query, no dot segments)",
    );
  }
  let id: string | null = null;
  if (why === "kicked") {
    if (!isMemberId(body.id)) {
      return httpError(400, "invalid_id", `the body needs "id", a member id: it ${MEMBER_ID_RULE}`);
    }
    id = body.id;
  }
  const reason = body.reason ?? null;
  if (
    reason !== null &&
    (typeof reason !== "string" || reason.length > MAX_REASON_LENGTH ||
      utf8Length(reason) > MAX_REASON_BYTES || hasControlCharacters(reason))
  ) {
    return httpError(
      400,
      "invalid_reason",
      `reason must be text of at most ${MAX_REASON_LENGTH} characters (${MAX_REASON_BYTES} UTF-8 bytes) without control characters`,
    );
  }
  return { room, id, why, reason: reason === "" ? null : reason };
}
