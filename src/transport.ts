/**
 * The transport seam: what the hub needs of a connection to fan out to it. A server-side
 * `WebSocket` is one as it is, so the raw fan-out stays a plain loop over a `Set` of sockets
 * with no wrapper in between; another transport (a server-sent-events stream, say) plugs in by
 * implementing these few members.
 * @module
 */

/** `readyState` of a peer that can take frames; the same value as `WebSocket.OPEN`. */
export const OPEN = 1;

/** `readyState` of a peer still being set up; the same value as `WebSocket.CONNECTING`. */
export const CONNECTING = 0;

/**
 * One connection as the hub sees it. The hub writes frames with {@link send}, judges slow
 * readers by {@link bufferedAmount} and ends connections with {@link close}.
 */
export interface Peer {
  /** {@link CONNECTING}, {@link OPEN}, or later states that take no more frames. */
  readonly readyState: number;
  /** Bytes handed to {@link send} and not yet written to the network. */
  readonly bufferedAmount: number;
  /** Queue one frame; throws a `DOMException` when the connection cannot take it. */
  send(data: string | ArrayBuffer): void;
  /** Start closing with a close code and reason the client sees. */
  close(code?: number, reason?: string): void;
  /** Told once when the connection has finished closing. */
  addEventListener(type: "close", listener: () => void, options?: { once?: boolean }): void;
}
