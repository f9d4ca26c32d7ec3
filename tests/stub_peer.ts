/**
 * A stand-in for a connection in unit tests of the hub's parts: it records the frames it is
 * sent and the close it is asked for, and its `bufferedAmount` is whatever the test sets.
 * Behaviour that is about sockets is tested over real sockets instead.
 * @module
 */
import type { Hub, Member } from "../src/hub.ts";
import type { Mode } from "../src/protocol.ts";
import { TokenBucket } from "../src/ratelimit.ts";
import { CONNECTING, OPEN, type Peer } from "../src/transport.ts";

/** A {@link Peer} that keeps what it is sent. */
export class StubPeer implements Peer {
  readyState: number;
  bufferedAmount = 0;
  /** Frames sent, in order. */
  readonly sent: (string | ArrayBuffer)[] = [];
  /** The close asked for, if any. */
  closedWith: { code: number | undefined; reason: string | undefined } | undefined;
  /** When set, `send` throws this (a broken connection). */
  failWith: DOMException | undefined;
  readonly #onClose: (() => void)[] = [];

  constructor(readyState = OPEN) {
    this.readyState = readyState;
  }

  send(data: string | ArrayBuffer): void {
    if (this.failWith) throw this.failWith;
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2; // CLOSING
  }

  addEventListener(_type: "close", listener: () => void): void {
    this.#onClose.push(listener);
  }

  /** The peer finished closing, as a transport would report it. */
  finishClose(): void {
    this.readyState = 3;
    for (const listener of this.#onClose.splice(0)) listener();
  }

  /** Every event this peer was sent, frames split at their newlines and parsed. */
  events(): { type: string; [k: string]: unknown }[] {
    return this.sent.flatMap((f) =>
      typeof f === "string" ? f.split("\n").map((l) => JSON.parse(l)) : []
    );
  }
}

/**
 * Connect a member on a stub peer to `hub` and, when the peer is open, join it to `room`;
 * `endedCount` counts the hub's calls of its `ended`.
 */
export function joinStub(
  hub: Hub,
  room: string,
  mode: Mode = "chat",
  peer = new StubPeer(),
): Member & { socket: StubPeer; endedCount: number } {
  const seq = hub.nextId();
  const member = {
    id: seq,
    name: seq,
    mode,
    room,
    socket: peer,
    ip: "192.0.2.1",
    nameLocked: false,
    bucket: new TokenBucket(0, 0),
    endedCount: 0,
    ended() {
      member.endedCount++;
    },
  };
  hub.connect(member);
  if (peer.readyState === OPEN) hub.open(member);
  return member;
}

export { CONNECTING, OPEN };
