/**
 * Why connections end, and the close code and reason a client sees for each. This is the one
 * table of close codes; `docs/protocol.md` mirrors it (a test keeps them equal).
 * @module
 */
import type { DisconnectReason } from "./metrics.ts";

/** A close frame the server sends. */
export interface CloseFrame {
  readonly code: number;
  readonly reason: string;
}

/**
 * For each way a connection can end, the close frame the server sends, or null where the
 * server sends none (the client closed, the peer stopped answering pings, the socket broke).
 */
export const DISCONNECTS = {
  client: null,
  slow_consumer: { code: 1008, reason: "slow consumer" },
  too_big: { code: 1009, reason: "message too big" },
  rate_limited: { code: 1008, reason: "rate limit exceeded" },
  idle: null,
  shutdown: { code: 1001, reason: "server shutting down" },
  error: null,
  token_expired: { code: 4001, reason: "token expired" },
  /** An operator disconnected the member (`POST /api/admin/disconnect`); the reason may differ. */
  kicked: { code: 4003, reason: "disconnected by operator" },
  /** An operator closed the member's room (`POST /api/admin/close-room`); likewise. */
  room_closed: { code: 4004, reason: "room closed by operator" },
} as const satisfies Record<DisconnectReason, CloseFrame | null>;

/** A disconnect that the server itself initiates with a close frame. */
export type DropReason = {
  [R in DisconnectReason]: typeof DISCONNECTS[R] extends null ? never : R;
}[DisconnectReason];

/** A disconnect an operator asks for, whose close reason the operator may word. */
export type OperatorClose = "kicked" | "room_closed";

/**
 * The close frame of a disconnect the server initiates; `wording`, when given, replaces the
 * table's reason (an operator's own words, see {@link OperatorClose}).
 */
export function closeFrame(reason: DropReason, wording?: string): CloseFrame {
  const frame = DISCONNECTS[reason];
  return wording === undefined ? frame : { code: frame.code, reason: wording };
}

/** The close reason Deno gives when a peer stopped answering pings (`idleTimeout`). */
export const IDLE_CLOSE_REASON = "No response from ping frame.";
