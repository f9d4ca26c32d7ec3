/**
 * The checks a WebSocket upgrade passes before it is accepted, and every way it can be
 * refused, in one table: what `/metrics` counts, the HTTP status, the stable error code, the
 * message and the headers (`Retry-After` among them) of each refusal.
 * @module
 */
import { type Grant, roomAllowed, type Verifier } from "./auth.ts";
import type { Config } from "./config.ts";
import type { ConnectHook } from "./connect_hook.ts";
import { httpError, type HttpErrorCode } from "./http.ts";
import type { Transport } from "./hub.ts";
import type { LogFields } from "./log.ts";
import type { RefuseReason } from "./metrics.ts";
import { checkName, type Mode, negotiateMode, SUBPROTOCOL } from "./protocol.ts";
import type { Resume } from "./tail.ts";

/** One way an upgrade is refused. */
export interface Refusal {
  /** The label it is counted under in `chorus_upgrades_refused_total`. */
  readonly reason: RefuseReason;
  readonly status: number;
  readonly code: HttpErrorCode;
  /** The message, unless the check that refused gives a more precise one. */
  readonly message: string;
  /** Seconds after which trying again may succeed (`Retry-After`); none when it will not. */
  readonly retryAfter?: number;
  readonly headers?: Readonly<Record<string, string>>;
}

/** `WWW-Authenticate` of a refused token (RFC 6750), which travels in the `token` parameter. */
const TOKEN_CHALLENGE = { "www-authenticate": 'Bearer realm="chorus", error="invalid_token"' };

/** Every refusal of an upgrade; `docs/protocol.md` lists each status and code (a test checks it). */
export const REFUSALS = {
  not_get: {
    reason: "bad_request",
    status: 405,
    code: "method_not_allowed",
    message: "WebSocket upgrades must use GET",
    headers: { allow: "GET" },
  },
  bad_version: {
    reason: "bad_request",
    status: 426,
    code: "unsupported_version",
    message: "only WebSocket version 13 is supported",
    headers: { "sec-websocket-version": "13" },
  },
  no_key: {
    reason: "bad_request",
    status: 400,
    code: "bad_request",
    message: "missing Sec-WebSocket-Key",
  },
  bad_upgrade: { reason: "bad_request", status: 400, code: "bad_request", message: "bad upgrade" },
  bad_origin: {
    reason: "bad_origin",
    status: 403,
    code: "forbidden_origin",
    message: "this origin may not connect",
  },
  bad_protocol: {
    reason: "bad_protocol",
    status: 400,
    code: "unsupported_protocol",
    message: `only the "${SUBPROTOCOL}" subprotocol is supported`,
  },
  bad_name: { reason: "bad_name", status: 400, code: "invalid_name", message: "invalid name" },
  bad_resume: {
    reason: "bad_request",
    status: 400,
    code: "invalid_resume",
    message: "resume with ?offset=N&epoch=E: N an integer of at least 0, E the welcome's epoch",
  },
  no_token: {
    reason: "bad_token",
    status: 401,
    code: "invalid_token",
    message: "a token is required: add ?token=JWT",
    headers: TOKEN_CHALLENGE,
  },
  bad_token: {
    reason: "bad_token",
    status: 401,
    code: "invalid_token",
    message: "invalid token",
    headers: TOKEN_CHALLENGE,
  },
  forbidden_room: {
    reason: "forbidden_room",
    status: 403,
    code: "forbidden_room",
    message: "this token may not join this room",
  },
  max_connections: {
    reason: "max_connections",
    status: 503,
    code: "too_many_connections",
    message: "the server is full",
    retryAfter: 10,
  },
  max_connections_per_ip: {
    reason: "max_connections_per_ip",
    status: 429,
    code: "too_many_connections",
    message: "too many connections from your address",
    retryAfter: 10,
  },
  shutting_down: {
    reason: "shutting_down",
    status: 503,
    code: "shutting_down",
    message: "the server is shutting down",
    retryAfter: 5,
  },
  forbidden: {
    reason: "forbidden",
    status: 403,
    code: "forbidden",
    message: "the application refused this connection",
  },
  hook_unavailable: {
    reason: "hook_unavailable",
    status: 503,
    code: "hook_unavailable",
    message: "the application could not be asked whether you may connect; try again later",
    retryAfter: 5,
  },
} as const satisfies Record<string, Refusal>;

/** The name of one of {@link REFUSALS}. */
export type RefusalKind = keyof typeof REFUSALS;

/** A refused upgrade: which refusal, a more precise message, and what to log with it. */
export interface Refused {
  readonly refused: RefusalKind;
  readonly message?: string;
  readonly fields?: LogFields;
}

/** An upgrade that passed every check but the connection limits. */
export interface Admitted {
  readonly room: string;
  readonly mode: Mode;
  /** The name asked for (`?name=`), or given by the token or the connect hook; else a guest's. */
  readonly name: string | undefined;
  /** Where the client resumes (`?offset=&epoch=`, or `?since=` a message id), for recovery. */
  readonly resume: Resume | undefined;
  /**
   * What the connection's token allows, with the connect hook's identity in place of its
   * claims; undefined when neither said who the client is.
   */
  readonly grant: Grant | undefined;
  /** Whether a `rename` is refused: the token's `name` claim, or the connect hook, fixed it. */
  readonly nameLocked: boolean;
}

/** What a transport passes to {@link checkMember} about a request besides its room. */
export interface MemberRequest {
  /** The request's query: `name`, `token`. */
  readonly params: URLSearchParams;
  /** The request's headers; the connect hook is sent some of them. */
  readonly headers: Headers;
  /** The client's address, as the connection limits see it. */
  readonly ip: string;
  readonly transport: Transport;
}

/**
 * Who an admitted connection is in its room, whatever its transport: its token's `sub` or the
 * connect hook's `id` (one user connected twice has the same id twice; the hub keys connections
 * by peer) or `seq`, a fresh id of the hub, and its name or a guest name made from `seq`.
 */
export function identify(admitted: Admitted, seq: string): { id: string; name: string } {
  return {
    id: admitted.grant?.sub ?? seq,
    name: admitted.name ?? `guest-${seq.split("-").pop()!.padStart(4, "0")}`,
  };
}

/** What the checks need. */
export interface UpgradeChecks {
  config: Pick<Config, "allowedOrigins">;
  /** Checks connection tokens; without it every upgrade is open to all. */
  verify: Verifier | undefined;
  /** Asks the application last (`--connect-hook-url`); without it the checks above decide. */
  connectHook?: ConnectHook | undefined;
}

/** The HTTP answer to a refused upgrade. */
export function refusalResponse(refused: Refused): Response {
  const r: Refusal = REFUSALS[refused.refused];
  const headers: Record<string, string> = { ...r.headers };
  if (r.retryAfter !== undefined) headers["retry-after"] = String(r.retryAfter);
  return httpError(r.status, r.code, refused.message ?? r.message, headers);
}

/** Run every check of an upgrade request for `room` from `ip`, the token's and the hook's last. */
export function checkUpgrade(
  checks: UpgradeChecks,
  req: Request,
  room: string,
  ip: string,
): Admitted | Refused | Promise<Admitted | Refused> {
  if (req.method !== "GET") return { refused: "not_get" };
  if (req.headers.get("sec-websocket-version") !== "13") return { refused: "bad_version" };
  if (!req.headers.get("sec-websocket-key")) return { refused: "no_key" };
  if (!originAllowed(req, checks.config.allowedOrigins)) return { refused: "bad_origin" };
  const mode = negotiateMode(req.headers.get("sec-websocket-protocol"));
  if (mode === null) return { refused: "bad_protocol" };
  const params = new URL(req.url).searchParams;
  const request = { params, headers: req.headers, ip, transport: "websocket" } as const;
  return checkMember(checks, request, room, mode, parseResume(params));
}

/**
 * The checks every transport shares once its own are done (the origin among them): the name,
 * the resume position (null when malformed), the token and its `rooms` claim and, last, the
 * connect hook, which is asked only about connections chorus would accept.
 * `src/sse.ts` admits event streams through it, so a stream and an upgrade are judged alike.
 */
export function checkMember(
  checks: UpgradeChecks,
  request: MemberRequest,
  room: string,
  mode: Mode,
  resume: Resume | undefined | null,
): Admitted | Refused | Promise<Admitted | Refused> {
  const { params } = request;
  const rawName = params.get("name");
  let name: string | undefined;
  if (rawName !== null) {
    const check = checkName(rawName);
    if (!check.ok) return { refused: "bad_name", message: check.message };
    name = check.name;
  }
  if (resume === null) return { refused: "bad_resume" };
  const hooked = (admitted: Admitted) => checks.connectHook?.(admitted, request) ?? admitted;
  if (!checks.verify) {
    return hooked({ room, mode, name, resume, grant: undefined, nameLocked: false });
  }
  const token = params.get("token");
  if (token === null || token === "") return { refused: "no_token", fields: { detail: "missing" } };
  return checks.verify(token).then((check): Admitted | Refused | Promise<Admitted | Refused> => {
    if (!check.ok) {
      return { refused: "bad_token", message: check.message, fields: { detail: check.reason } };
    }
    const { grant } = check;
    if (!roomAllowed(grant.rooms, room)) {
      return { refused: "forbidden_room", fields: { sub: grant.sub, room } };
    }
    const nameLocked = grant.name !== undefined;
    return hooked({ room, mode, name: grant.name ?? name, resume, grant, nameLocked });
  });
}

/** Longest epoch a client may send back; chorus' own are 12 characters. */
const MAX_EPOCH_LENGTH = 64;

/**
 * Where a client resumes: `?offset=N&epoch=E` (which wins), or `?since=ID`; undefined for
 * neither, null when `offset` and `epoch` are malformed or one comes without the other.
 */
export function parseResume(params: URLSearchParams): Resume | undefined | null {
  const offset = params.get("offset");
  const epoch = params.get("epoch");
  if (offset === null && epoch === null) {
    const since = params.get("since");
    return since === null ? undefined : { since };
  }
  if (offset === null || epoch === null || epoch === "" || epoch.length > MAX_EPOCH_LENGTH) {
    return null;
  }
  const n = Number(offset);
  if (!/^\d+$/.test(offset) || !Number.isSafeInteger(n)) return null;
  return { epoch, offset: n };
}

/**
 * Cross-site WebSocket hijacking guard, also for event streams and their POSTs: no Origin (not
 * a browser), an Origin on the same host as the request, or one listed in `--allowed-origins`.
 */
export function originAllowed(req: Request, allowed: string[] | "*"): boolean {
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
