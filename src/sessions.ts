/**
 * Sessions of event-stream members: the unguessable value an SSE member's `welcome` carries
 * and its `POST /ROOM` sends back (`Authorization: Bearer SESSION`) to act as that member. A
 * session is bound to its member, so to its room, and ends with its stream.
 *
 * With `--workers`, the kernel spreads connections over the workers, so a POST may reach a
 * worker other than the one holding the stream. A session names the hub that holds it, and a
 * {@link SessionRelay} over a `BroadcastChannel` of the process carries the POST's event there
 * and the answer back. Separate instances share no relay: a load balancer in front of several
 * instances must send a client's POSTs where its stream is (see `docs/operations.md`).
 * @module
 */
import type { Member } from "./hub.ts";
import type { ErrorCode } from "./protocol.ts";

/** What became of a POSTed event, where its session is held. */
export type PostResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: ErrorCode | "invalid_session"; readonly message: string };

/** Random bytes in a session, after the hub's id: 128 bits, never guessed. */
const SESSION_BYTES = 16;

/** The live sessions of one hub. */
export class Sessions {
  readonly #members = new Map<string, Member>();
  /** The hub's id on the bus, the prefix of every session it hands out. */
  readonly node: string;

  constructor(node: string) {
    this.node = node;
  }

  /** A fresh session value for a member about to be built; {@link bind} makes it live. */
  create(): string {
    const bytes = crypto.getRandomValues(new Uint8Array(SESSION_BYTES));
    return `${this.node}.${base64url(bytes)}`;
  }

  /** The session now acts as `member`, until {@link end}. */
  bind(session: string, member: Member): void {
    this.#members.set(session, member);
  }

  /** The stream of the session ended: the session is gone for good. */
  end(session: string): void {
    this.#members.delete(session);
  }

  /** The member a live session of this hub acts as, if it is one of `room`. */
  find(session: string, room: string): Member | undefined {
    const member = this.#members.get(session);
    return member?.room === room ? member : undefined;
  }

  /** Whether a session was handed out by another hub (another worker of this process). */
  foreign(session: string): boolean {
    return !session.startsWith(`${this.node}.`);
  }
}

/** How long a relayed POST waits for the hub holding its session to answer. */
export const RELAY_TIMEOUT_MS = 2_000;

/** What crosses a {@link SessionRelay}. */
type RelayMessage =
  | { t: "post"; to: string; from: string; id: number; session: string; room: string; text: string }
  | { t: "posted"; to: string; id: number; result: PostResult };

/** Acts on a POSTed event for a session of this hub; see {@link SessionRelay}. */
export type PostHandler = (session: string, room: string, text: string) => PostResult;

/** The POSTs of one process' workers, each carried to the worker that holds its session. */
export class SessionRelay {
  readonly #channel: BroadcastChannel;
  readonly #node: string;
  #seq = 0;
  readonly #waiting = new Map<
    number,
    { resolve: (r: PostResult) => void; timer: ReturnType<typeof setTimeout> }
  >();

  /** `name` is the same for every worker of one process; `handle` answers for this hub. */
  constructor(name: string, node: string, handle: PostHandler) {
    this.#node = node;
    this.#channel = new BroadcastChannel(name);
    this.#channel.onmessage = (e: MessageEvent<RelayMessage>) => {
      const m = e.data;
      if (m.to !== this.#node) return;
      if (m.t === "post") {
        const result = handle(m.session, m.room, m.text);
        this.#send({ t: "posted", to: m.from, id: m.id, result });
        return;
      }
      const waiter = this.#waiting.get(m.id);
      if (!waiter) return; // answered after its timeout
      this.#waiting.delete(m.id);
      clearTimeout(waiter.timer);
      waiter.resolve(m.result);
    };
  }

  /**
   * Have the hub `node` act on `text` for `session`. A hub that does not answer within
   * {@link RELAY_TIMEOUT_MS} (a worker that crashed, or no such worker) ended the session.
   */
  ask(node: string, session: string, room: string, text: string): Promise<PostResult> {
    const id = ++this.#seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        resolve({ ok: false, code: "invalid_session", message: "no worker holds this session" });
      }, RELAY_TIMEOUT_MS);
      this.#waiting.set(id, { resolve, timer });
      this.#send({ t: "post", to: node, from: this.#node, id, session, room, text });
    });
  }

  /** Leave the channel; POSTs still waiting are answered as ended sessions. */
  close(): void {
    this.#channel.close();
    for (const [id, waiter] of this.#waiting) {
      clearTimeout(waiter.timer);
      waiter.resolve({ ok: false, code: "invalid_session", message: "the server is stopping" });
      this.#waiting.delete(id);
    }
  }

  #send(m: RelayMessage): void {
    this.#channel.postMessage(m);
  }
}

/** The hub id a session names (the part before the dot). */
export function nodeOfSession(session: string): string {
  const dot = session.indexOf(".");
  return dot === -1 ? "" : session.slice(0, dot);
}

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
