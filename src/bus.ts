/**
 * The bus between hubs that form one logical hub: the workers of one process
 * (`--workers`, over `BroadcastChannel`) or the instances sharing a Redis server
 * (`--redis-url`, `src/redis_bus.ts`). Each hub fans out to its own sockets and publishes
 * what happened; the others replay it to theirs. Nothing is published when there is no bus.
 * @module
 */
import type { NodeStats } from "./admin_stats.ts";
import type { OperatorClose } from "./close.ts";
import type { Mode } from "./protocol.ts";

/** A member as the other hubs track it. */
export interface RemoteMember {
  id: string;
  name: string;
  mode: Mode;
}

/**
 * The `node` of a `sync` the bus makes up itself when it (re)connects: every hub answers with
 * its members, and reads what it may have missed of each of its rooms' streams.
 */
export const BACKPLANE_NODE = "redis";

/**
 * What crosses the bus: presence, and the operator's live numbers and controls (`src/admin.ts`);
 * messages travel through the stream store (`src/store.ts`). `node` names the publishing hub,
 * so it can ignore its own echo.
 */
export type BusMessage =
  | { t: "join"; node: string; room: string; member: RemoteMember }
  | { t: "leave"; node: string; room: string; id: string }
  | { t: "rename"; node: string; room: string; id: string; name: string; oldName: string }
  /** A hub started: every other hub answers with `members`. */
  | { t: "sync"; node: string }
  /** Every member of the publishing hub, by room; replaces what was known of that node. */
  | { t: "members"; node: string; rooms: [room: string, members: RemoteMember[]][] }
  /** A hub is stopping, or stopped answering (heartbeat expired): its members are gone. */
  | { t: "bye"; node: string }
  /** The publishing hub's numbers for the operator's live view, every second. */
  | { t: "stats"; node: string; stats: NodeStats }
  /**
   * An operator closes every connection of member `id` in `room`, or of everyone in it when `id`
   * is null: each hub closes its own, with the close frame of `why` and `reason`.
   */
  | {
    t: "kick";
    node: string;
    room: string;
    id: string | null;
    why: OperatorClose;
    reason: string | null;
  };

/** A transport for {@link BusMessage}s; delivery is in order per publisher. */
export interface Bus {
  publish(message: BusMessage): void;
  /** Set the one receiver of messages from other hubs. */
  subscribe(receive: (message: BusMessage) => void): void;
  /** Leave the bus; a bus that must flush what was published resolves when it has. */
  close(): void | Promise<void>;
  /**
   * Only on buses that carry a room's messages to the hubs that ask for them (Redis): start
   * receiving `room`'s stream. Resolves once it is received, or at once when the bus is down;
   * it never rejects. Without it, a hub receives every room.
   */
  watch?(room: string): Promise<void>;
  /** Stop receiving a room's messages (its last member on this hub left). */
  unwatch?(room: string): void;
}

/** The bus between the workers of one process. */
export class BroadcastChannelBus implements Bus {
  readonly #channel: BroadcastChannel;

  /** `name` must be the same for every worker of one server and unique per server. */
  constructor(name: string) {
    this.#channel = new BroadcastChannel(name);
  }

  publish(message: BusMessage): void {
    this.#channel.postMessage(message);
  }

  subscribe(receive: (message: BusMessage) => void): void {
    this.#channel.onmessage = (e: globalThis.MessageEvent<BusMessage>) => receive(e.data);
  }

  close(): void {
    this.#channel.close();
  }
}
