/**
 * The `chorus.v1` chat protocol: its event types, the validation of untrusted client
 * frames and of display names. `docs/protocol.md` is the prose twin of this file.
 * @module
 */

/** The WebSocket subprotocol name a chat client offers. */
export const SUBPROTOCOL = "chorus.v1";

/** Longest chat text, in characters (UTF-16 code units, as JavaScript counts them). */
export const MAX_TEXT_LENGTH = 4096;

/** Longest display name, in characters, after trimming. */
export const MAX_NAME_LENGTH = 32;

/**
 * Members a `welcome` lists in a room over the presence limit, as a sample marked `partial`:
 * enough to show a few names, never the cost of the whole list.
 */
export const PRESENCE_SAMPLE = 20;

/** How a connection talks: raw relays frames verbatim, chat speaks `chorus.v1`. */
export type Mode = "raw" | "chat";

/** A room member as other members see it. */
export interface MemberInfo {
  id: string;
  name: string;
}

/** A chat message; also the shape kept in history. */
export interface MessageEvent {
  type: "message";
  id: string;
  from: MemberInfo;
  text: string;
  ts: number;
  /**
   * The message's place in its room's stream: 1 more than the message before it. Absent on
   * a message that could not be stored (a full disk, the backplane down), which no resume
   * will return.
   */
  offset?: number;
}

/** Stable machine-readable error codes carried by `error` events. */
export type ErrorCode =
  | "invalid_json"
  | "unknown_type"
  | "invalid_field"
  | "text_too_long"
  | "invalid_name"
  | "name_locked"
  | "rate_limited"
  | "rejected"
  | "hook_unavailable";

/** Every event the server sends to a `chorus.v1` client. */
export type ServerEvent =
  | {
    type: "welcome";
    id: string;
    name: string;
    room: string;
    /** Members of the room on every instance, the newcomer and raw clients included. */
    count: number;
    /** Every member while `count` is within the presence limit; a sample above it. */
    members: MemberInfo[];
    /** Present when the room is over the presence limit: `members` is only a sample. */
    partial?: true;
    /** The room's stream: its epoch and latest offset (0 for an empty stream). */
    epoch: string;
    offset: number;
    /**
     * `history`, and the `message` events that follow the welcome when a resume has more to
     * catch up on than `--history`, are every kept message after this offset.
     */
    after: number;
    history: MessageEvent[];
    /**
     * True when the messages after the client's position (`?offset=&epoch=` or `?since=`) are
     * all delivered, or the client asked for no position.
     */
    recovered: boolean;
    /** An event-stream member's session, for its `POST /ROOM` (see `src/sse.ts`). */
    session?: string;
    /** Set with `session`: how the member receives (`sse`). */
    transport?: "websocket" | "sse";
  }
  | MessageEvent
  /** The member count of a room over the presence limit, instead of `join` and `leave`. */
  | { type: "presence"; count: number }
  /** A room fell back within the presence limit: the whole list; `join`/`leave` resume. */
  | { type: "members"; count: number; members: MemberInfo[] }
  | { type: "join"; id: string; name: string }
  | { type: "leave"; id: string; name: string }
  | { type: "rename"; id: string; name: string; oldName: string }
  | { type: "error"; code: ErrorCode; message: string };

/** Every event a `chorus.v1` client may send, already validated. */
export type ClientEvent =
  | { type: "message"; text: string }
  | { type: "rename"; name: string };

/** A protocol violation, answered with an `error` event while the connection stays open. */
export interface ProtocolError {
  type: "error";
  code: ErrorCode;
  message: string;
}

/** Build an `error` event; kept here so every code and message shape lives in one place. */
export function protocolError(code: ErrorCode, message: string): ProtocolError {
  return { type: "error", code, message };
}

/** Result of validating a name: the normalised name, or why it was refused. */
export type NameCheck = { ok: true; name: string } | { ok: false; message: string };

// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/**
 * Whether text has a control character (C0, C1, DEL) or a line or paragraph separator: what
 * no name, member id, room path or close reason may hold, since each ends up in log lines,
 * headers or a page.
 */
export function hasControlCharacters(s: string): boolean {
  return CONTROL.test(s);
}

/** Trim a display name and check it is 1–32 characters without control characters. */
export function checkName(raw: string): NameCheck {
  const name = raw.trim();
  if (name.length === 0) return { ok: false, message: "name must not be empty" };
  if (name.length > MAX_NAME_LENGTH) {
    return { ok: false, message: `name must be at most ${MAX_NAME_LENGTH} characters` };
  }
  if (hasControlCharacters(name)) {
    return { ok: false, message: "name must not contain control characters" };
  }
  return { ok: true, name };
}

/**
 * Validate one client frame. Untrusted JSON stops here: the hub only ever sees a typed
 * {@link ClientEvent} or a {@link ProtocolError} to send back.
 */
export function parseClientEvent(frame: string): ClientEvent | ProtocolError {
  let value: unknown;
  try {
    value = JSON.parse(frame);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return protocolError("invalid_json", "frame is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return protocolError("invalid_json", "frame must be one JSON object");
  }
  const event = value as Record<string, unknown>;
  if (typeof event.type !== "string") {
    return protocolError("invalid_field", `"type" must be a string`);
  }
  switch (event.type) {
    case "message": {
      if (typeof event.text !== "string") {
        return protocolError("invalid_field", `"text" must be a string`);
      }
      if (event.text.length > MAX_TEXT_LENGTH) {
        return protocolError("text_too_long", `text must be at most ${MAX_TEXT_LENGTH} characters`);
      }
      return { type: "message", text: event.text };
    }
    case "rename": {
      if (typeof event.name !== "string") {
        return protocolError("invalid_field", `"name" must be a string`);
      }
      const check = checkName(event.name);
      if (!check.ok) return protocolError("invalid_name", check.message);
      return { type: "rename", name: check.name };
    }
    default:
      return protocolError("unknown_type", `unknown event type "${event.type.slice(0, 64)}"`);
  }
}

/** Pick the subprotocol from an offer list: chat, raw (nothing offered) or refused. */
export function negotiateMode(offered: string | null): Mode | null {
  if (offered === null || offered.trim() === "") return "raw";
  const list = offered.split(",").map((p) => p.trim());
  return list.includes(SUBPROTOCOL) ? "chat" : null;
}
