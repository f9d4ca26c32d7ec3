/**
 * Presence: who is in which room, on this hub and on the others of its bus. It sends nothing:
 * each change returns the `join`, `leave` or `rename` event to announce, so the hub decides
 * who hears it and this module can be tested without sockets.
 * @module
 */
import type { RemoteMember } from "./bus.ts";
import type { MemberInfo, Mode } from "./protocol.ts";

/** A member of this hub as presence tracks it; its `name` changes with {@link Presence.rename}. */
export interface Present {
  readonly id: string;
  name: string;
  readonly mode: Mode;
}

/** A member's new name, as announced. */
export type Rename = { type: "rename"; id: string; name: string; oldName: string };

/** An event to announce to a room's chat members after a presence change. */
export type PresenceChange =
  | { type: "join"; id: string; name: string }
  | { type: "leave"; id: string; name: string }
  | Rename;

/** One page of a room's members, from {@link Presence.page}. */
export interface MemberPage {
  members: RemoteMember[];
  /** The `after` of the next page; null when this one is the last. */
  next: string | null;
}

/** A change and the room it happened in. */
export type RoomChange = [room: string, change: PresenceChange];

interface Remote extends RemoteMember {
  readonly node: string;
}

/** The members of every room, local ones in join order. */
export class Presence {
  readonly #local = new Map<string, Set<Present>>();
  readonly #remote = new Map<string, Map<string, Remote>>();

  /** Rooms with at least one member on any hub. */
  get rooms(): number {
    let n = this.#local.size;
    for (const room of this.#remote.keys()) if (!this.#local.has(room)) n++;
    return n;
  }

  /** Members of other hubs, all rooms together. */
  get remoteMembers(): number {
    let n = 0;
    for (const members of this.#remote.values()) n += members.size;
    return n;
  }

  /** Whether anyone, here or on another hub, is in `room`. */
  occupied(room: string): boolean {
    return this.#local.has(room) || this.#remote.has(room);
  }

  /** Whether a member of this hub is in `room`. */
  has(room: string, member: Present): boolean {
    return this.#local.get(room)?.has(member) ?? false;
  }

  /** A member of this hub entered `room`. */
  join(room: string, member: Present): PresenceChange {
    let members = this.#local.get(room);
    if (members === undefined) {
      members = new Set();
      this.#local.set(room, members);
    }
    members.add(member);
    return { type: "join", id: member.id, name: member.name };
  }

  /** A member of this hub left `room`; undefined when it was not in it. */
  leave(room: string, member: Present): PresenceChange | undefined {
    const members = this.#local.get(room);
    if (!members?.delete(member)) return undefined;
    if (members.size === 0) this.#local.delete(room);
    return { type: "leave", id: member.id, name: member.name };
  }

  /** A member of this hub took a new name. */
  rename(member: Present, name: string): Rename {
    const oldName = member.name;
    member.name = name;
    return { type: "rename", id: member.id, name, oldName };
  }

  /** Members of `room` on every hub, this hub's included. */
  count(room: string): number {
    return (this.#local.get(room)?.size ?? 0) + (this.#remote.get(room)?.size ?? 0);
  }

  /**
   * Members of a room on every hub, as members see them: this hub's first, in join order; at
   * most `max` of them, so a sample of a large room costs no more than the sample.
   */
  members(room: string, max = Infinity): MemberInfo[] {
    const out: MemberInfo[] = [];
    for (const m of this.#everyone(room)) {
      if (out.length >= max) break;
      out.push({ id: m.id, name: m.name });
    }
    return out;
  }

  /** Every room with members on any hub, by room name, with its member count. */
  counts(): Map<string, number> {
    const rooms = new Map<string, number>();
    for (const room of this.#local.keys()) rooms.set(room, this.count(room));
    for (const room of this.#remote.keys()) rooms.set(room, this.count(room));
    return byKey(rooms);
  }

  /**
   * One page of a room's members on every hub, ordered by id, starting after the id `after`.
   * Members who share an id (one user's two tabs) are never split across pages, so a page may
   * hold more than `limit` of them; `next` is the id to ask the next page after, null at the end.
   */
  page(room: string, after: string | undefined, limit: number): MemberPage {
    const all: RemoteMember[] = [];
    for (const { id, name, mode } of this.#everyone(room)) {
      if (after === undefined || id > after) all.push({ id, name, mode });
    }
    all.sort((a, b) => compare(a.id, b.id));
    let end = Math.min(limit, all.length);
    while (end > 0 && end < all.length && all[end]!.id === all[end - 1]!.id) end++;
    const members = all.slice(0, end);
    return { members, next: end < all.length ? members[members.length - 1]!.id : null };
  }

  /** Every member of `room`: this hub's in join order, then the other hubs'. */
  *#everyone(room: string): Iterable<RemoteMember> {
    yield* this.#local.get(room) ?? [];
    yield* this.#remote.get(room)?.values() ?? [];
  }

  /** This hub's members by room, as the other hubs learn them. */
  snapshot(): [room: string, members: RemoteMember[]][] {
    const out: [string, RemoteMember[]][] = [];
    for (const [room, members] of this.#local) {
      out.push([room, [...members].map(({ id, name, mode }) => ({ id, name, mode }))]);
    }
    return out;
  }

  /** Every room with members on any hub, by room name, with those members, this hub's first. */
  directory(): Map<string, RemoteMember[]> {
    const rooms = new Map(this.snapshot());
    for (const [room, members] of this.#remote) {
      const list = rooms.get(room) ?? [];
      for (const m of members.values()) list.push({ id: m.id, name: m.name, mode: m.mode });
      rooms.set(room, list);
    }
    return byKey(rooms);
  }

  /** A member of another hub entered `room`. */
  remoteJoin(node: string, room: string, member: RemoteMember): PresenceChange {
    let members = this.#remote.get(room);
    if (members === undefined) {
      members = new Map();
      this.#remote.set(room, members);
    }
    members.set(member.id, { ...member, node });
    return { type: "join", id: member.id, name: member.name };
  }

  /** A member of another hub left `room`; undefined when it was not known. */
  remoteLeave(room: string, id: string): PresenceChange | undefined {
    const members = this.#remote.get(room);
    const gone = members?.get(id);
    if (members === undefined || gone === undefined) return undefined;
    members.delete(id);
    if (members.size === 0) this.#remote.delete(room);
    return { type: "leave", id: gone.id, name: gone.name };
  }

  /** A member of another hub took a new name (announced even if it was not known). */
  remoteRename(room: string, id: string, name: string, oldName: string): PresenceChange {
    const remote = this.#remote.get(room)?.get(id);
    if (remote) remote.name = name;
    return { type: "rename", id, name, oldName };
  }

  /**
   * Take a hub's full member list in place of what was known of it, returning who joined,
   * left or was renamed meanwhile (e.g. while the bus was down).
   */
  replaceNode(node: string, rooms: [string, RemoteMember[]][]): RoomChange[] {
    const before = new Map<string, RemoteMember>();
    for (const [room, members] of this.#remote) {
      for (const m of members.values()) if (m.node === node) before.set(`${room}\n${m.id}`, m);
    }
    this.forgetNode(node);
    const changes: RoomChange[] = [];
    for (const [room, members] of rooms) {
      for (const member of members) {
        const joined = this.remoteJoin(node, room, member);
        const key = `${room}\n${member.id}`;
        const old = before.get(key);
        before.delete(key);
        if (!old) changes.push([room, joined]);
        else if (old.name !== member.name) {
          changes.push([room, {
            type: "rename",
            id: member.id,
            name: member.name,
            oldName: old.name,
          }]);
        }
      }
    }
    for (const [key, gone] of before) {
      changes.push([key.slice(0, key.indexOf("\n")), {
        type: "leave",
        id: gone.id,
        name: gone.name,
      }]);
    }
    return changes;
  }

  /** Forget every member of a hub that left the bus, returning their `leave`s. */
  forgetNode(node: string): RoomChange[] {
    const changes: RoomChange[] = [];
    for (const [room, members] of [...this.#remote]) {
      for (const m of [...members.values()]) {
        if (m.node !== node) continue;
        const gone = this.remoteLeave(room, m.id);
        if (gone) changes.push([room, gone]);
      }
    }
    return changes;
  }
}

/** Code-unit order of two strings (ids, room names), the same in every locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The map with its entries in {@link compare} order of their keys. */
function byKey<T>(map: Map<string, T>): Map<string, T> {
  return new Map([...map].sort(([a], [b]) => compare(a, b)));
}
