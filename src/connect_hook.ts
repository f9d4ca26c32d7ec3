/**
 * The connect hook (`--connect-hook-url`): before a WebSocket upgrade or an event stream is
 * accepted, chorus asks the application behind it whether this client may connect, sending what
 * the application knows its users by (the session cookie, the `Authorization` header), so an
 * application can admit its own sessions without minting tokens. The application's answer is
 * untrusted input like a client's and is validated here, at the edge: an identity chorus cannot
 * use is a failed hook, never a half-applied one. A hook that cannot be asked refuses the
 * connection unless `--connect-hook-failure open` says otherwise, and an explicit refusal is
 * never turned into an acceptance. `docs/hooks.md` is the application's side of it.
 * @module
 */
import { type Grant, isMemberId, MEMBER_ID_RULE, parseRoomPatterns, roomAllowed } from "./auth.ts";
import type { Config, HookFailure } from "./config.ts";
import { type HookAnswer, HookError, postSigned } from "./hook_client.ts";
import type { Logger } from "./log.ts";
import { C } from "./metrics.ts";
import { checkName } from "./protocol.ts";
import type { Admitted, MemberRequest, Refused } from "./upgrade.ts";

/**
 * Ask the application about a connection that passed every other check (the token's among
 * them): the same connection, with the identity the application gave it, or a refusal.
 */
export type ConnectHook = (admitted: Admitted, request: MemberRequest) => Promise<
  Admitted | Refused
>;

/**
 * Hook requests one server (one worker of `--workers`) has in flight at most. Connections
 * waiting for the hook hold no connection slot, so this is what bounds them (and the sockets
 * to the application) when a crowd reconnects at once or the application is slow: the rest are
 * answered as if the hook had failed, at once, and told to come back (`Retry-After`).
 */
export const MAX_PENDING_CONNECT_HOOKS = 1000;

/** Longest refusal reason passed on to the client, in characters; a longer one is cut. */
export const MAX_REASON_LENGTH = 200;

/** The message of a refusal whose answer gives no usable reason. */
export const DEFAULT_REASON = "the application refused this connection";

/**
 * What the application may say about whom it admits, each field in the role of the JWT claim
 * of the same meaning: `id` as `sub`, `name` as `name`, `rooms` as `rooms`. Undefined fields
 * were not given (absent or null).
 */
export interface ConnectIdentity {
  /** The member id every client sees (1–128 characters, no control characters). */
  id: string | undefined;
  /** The display name, with the rules of `?name=`; it wins over `?name=`. */
  name: string | undefined;
  /** Whether a `rename` is refused with `name_locked`; undefined keeps the token's say. */
  nameLocked: boolean | undefined;
  /** Normalised room patterns this connection may join; undefined allows every room. */
  rooms: string[] | undefined;
}

/** What one answer of the application means. */
export type ConnectVerdict =
  | { verdict: "allow"; identity: ConnectIdentity }
  | { verdict: "deny"; reason: string }
  | { verdict: "unavailable"; detail: string };

/** How the hook of one server is built; see {@link connectHookOf} for the config's. */
export interface ConnectHookOptions {
  url: string;
  /** The key of `--webhook-secret` (`signingKey`), which signs every request. */
  key: Promise<CryptoKey>;
  timeoutMs: number;
  failure: HookFailure;
  log: Logger;
  /** The metrics row the verdicts are counted in (`chorus_hook_verdicts_total`). */
  row: Float64Array;
  /** Requests in flight at most; {@link MAX_PENDING_CONNECT_HOOKS} by default. */
  maxPending?: number;
}

/** The hook `--connect-hook-url` asks for, or undefined without one; `key` signs it. */
export function connectHookOf(
  config: Pick<Config, "connectHookUrl" | "connectHookTimeout" | "connectHookFailure">,
  key: Promise<CryptoKey>,
  log: Logger,
  row: Float64Array,
): ConnectHook | undefined {
  const url = config.connectHookUrl;
  if (url === undefined) return undefined;
  return createConnectHook({
    url,
    key,
    timeoutMs: config.connectHookTimeout * 1000,
    failure: config.connectHookFailure,
    log,
    row,
  });
}

/** Build a connect hook; each call POSTs one signed request and counts its verdict. */
export function createConnectHook(options: ConnectHookOptions): ConnectHook {
  const { url, timeoutMs, log, row } = options;
  const { key } = options;
  const maxPending = options.maxPending ?? MAX_PENDING_CONNECT_HOOKS;
  let pending = 0;

  async function ask(body: string): Promise<ConnectVerdict> {
    if (pending >= maxPending) {
      return { verdict: "unavailable", detail: `${maxPending} hook requests already in flight` };
    }
    pending++;
    try {
      return readConnectAnswer(await postSigned({ url, key, body, timeoutMs }));
    } catch (err) {
      if (!(err instanceof HookError)) throw err;
      return { verdict: "unavailable", detail: `${err.kind}: ${err.message}` };
    } finally {
      pending--;
    }
  }

  return async (admitted, request) => {
    const verdict = await ask(connectRequestBody(admitted, request));
    const { room } = admitted;
    switch (verdict.verdict) {
      case "allow":
        row[C.connectAllowed]!++;
        return withIdentity(admitted, verdict.identity);
      case "deny":
        row[C.connectDenied]!++;
        return {
          refused: "forbidden",
          message: verdict.reason,
          fields: { room, detail: verdict.reason },
        };
      case "unavailable":
        row[C.connectUnavailable]!++;
        if (options.failure === "closed") {
          return { refused: "hook_unavailable", fields: { room, detail: verdict.detail } };
        }
        log.warn("connect hook failed; connection accepted (--connect-hook-failure open)", {
          detail: verdict.detail,
          room,
          ip: request.ip,
        });
        return admitted;
    }
  };
}

/**
 * The JSON body of one hook request: the room, the name asked for (or fixed by the token), the
 * client's address, its `Origin`, its transport, the token's `sub`, and the three headers an
 * application identifies its users by; null for each one absent.
 */
export function connectRequestBody(admitted: Admitted, request: MemberRequest): string {
  const h = request.headers;
  return JSON.stringify({
    room: admitted.room,
    name: admitted.name ?? null,
    ip: request.ip,
    origin: h.get("origin"),
    transport: request.transport,
    sub: admitted.grant?.sub ?? null,
    headers: {
      cookie: h.get("cookie"),
      authorization: h.get("authorization"),
      "user-agent": h.get("user-agent"),
    },
  });
}

/**
 * What an answer means: `403` is a refusal (with `reason` when it is a string), and so is
 * `200` with `"allow": false`; `200` with `"allow": true` allows, with the identity it gives,
 * which must be valid. Anything else (another status, a body that is not a JSON object, an
 * `allow` that is not a boolean, an invalid identity) is a failed hook.
 */
export function readConnectAnswer(answer: HookAnswer): ConnectVerdict {
  const { status, body } = answer;
  const fields: Record<string, unknown> = typeof body === "object" && body !== null &&
      !Array.isArray(body)
    ? body as Record<string, unknown>
    : {};
  if (status === 403) return { verdict: "deny", reason: reasonOf(fields.reason) };
  const unavailable = (detail: string): ConnectVerdict => ({ verdict: "unavailable", detail });
  if (status !== 200) return unavailable(`answered with status ${status}`);
  if (fields.allow === false) return { verdict: "deny", reason: reasonOf(fields.reason) };
  if (fields.allow !== true) return unavailable(`the answer's "allow" is not true or false`);
  const identity = readIdentity(fields);
  return typeof identity === "string"
    ? unavailable(`invalid identity in the answer: ${identity}`)
    : { verdict: "allow", identity };
}

/** The identity of an allowing answer, or what is wrong with it. */
function readIdentity(fields: Record<string, unknown>): ConnectIdentity | string {
  const given = (v: unknown) => v !== undefined && v !== null;
  const { id, name, nameLocked, rooms } = fields;
  const identity: ConnectIdentity = {
    id: undefined,
    name: undefined,
    nameLocked: undefined,
    rooms: undefined,
  };
  if (given(id)) {
    if (!isMemberId(id)) return `"id" ${MEMBER_ID_RULE}`;
    identity.id = id;
  }
  if (given(name)) {
    if (typeof name !== "string") return `"name" must be a string`;
    const check = checkName(name);
    if (!check.ok) return `"name": ${check.message}`;
    identity.name = check.name;
  }
  if (given(nameLocked)) {
    if (typeof nameLocked !== "boolean") return `"nameLocked" must be true or false`;
    identity.nameLocked = nameLocked;
  }
  if (given(rooms)) {
    const patterns = parseRoomPatterns(rooms);
    if (typeof patterns === "string") return `"rooms": ${patterns}`;
    identity.rooms = patterns;
  }
  return identity;
}

// Control characters, the line and paragraph separators, and bidirectional overrides, which
// could break a log line or turn a reason around where a page shows it.
// deno-lint-ignore no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+/g;

/**
 * A refusal reason fit to pass on to the client and the log: printable, one line, at most
 * {@link MAX_REASON_LENGTH} characters; {@link DEFAULT_REASON} when there is none.
 */
export function reasonOf(raw: unknown): string {
  if (typeof raw !== "string") return DEFAULT_REASON;
  const clean = raw.replace(UNPRINTABLE, " ").replace(/\s+/g, " ").trim();
  if (clean === "") return DEFAULT_REASON;
  const chars = Array.from(clean);
  return chars.length <= MAX_REASON_LENGTH
    ? clean
    : chars.slice(0, MAX_REASON_LENGTH - 1).join("") + "…";
}

/**
 * The admitted connection with the application's identity: its `id`, `name` and `rooms` take
 * the place of the token's (the token's `rooms` were checked already, so both must allow the
 * room), and its `nameLocked`, when given, decides whether the name may change. The token's
 * expiry still applies.
 */
function withIdentity(admitted: Admitted, identity: ConnectIdentity): Admitted | Refused {
  const { id, name, nameLocked, rooms } = identity;
  if (!roomAllowed(rooms, admitted.room)) {
    return {
      refused: "forbidden_room",
      message: "the application does not allow this room",
      fields: { sub: id ?? admitted.grant?.sub, room: admitted.room },
    };
  }
  if (id === undefined && name === undefined && rooms === undefined) {
    return nameLocked === undefined ? admitted : { ...admitted, nameLocked };
  }
  const token = admitted.grant;
  const grant: Grant = {
    sub: id ?? token?.sub,
    name: name ?? token?.name,
    rooms: rooms ?? token?.rooms,
    expiresAt: token?.expiresAt,
  };
  return {
    ...admitted,
    name: name ?? admitted.name,
    grant,
    nameLocked: nameLocked ?? admitted.nameLocked,
  };
}

/**
 * `checked`, or undefined as soon as the client leaves. A client may leave while the hook is
 * asked, and Deno still upgrades a request whose client is gone, to a socket that never opens
 * nor closes: a member made of it would hold its connection slot forever. The request's
 * `signal` aborts when its client leaves, but only if it was read before (Deno makes it on
 * first use), so it must be read before the wait starts.
 */
export function unlessClientLeaves<T>(
  checked: Promise<T>,
  signal: AbortSignal,
): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  const left = Promise.withResolvers<undefined>();
  const onAbort = () => left.resolve(undefined);
  signal.addEventListener("abort", onAbort, { once: true });
  return Promise.race([checked, left.promise]).finally(() =>
    signal.removeEventListener("abort", onAbort)
  );
}
