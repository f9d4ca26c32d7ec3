/**
 * The SQLite {@link Backend} of a {@link LocalStream}: every room's stream in one file,
 * `DIR/chorus.db`, so a restart resumes each room at the offset and epoch it stopped at.
 *
 * Messages live in one table keyed by an INTEGER PRIMARY KEY (`seq`) that grows in write
 * order, so the oldest messages of all rooms come first: retention by age and by total size
 * deletes a prefix of `seq`, found by binary search or a short walk, never by a scan or an
 * extra index. A unique index on (room, offset) serves reads and per-room trimming. The total
 * of stored bytes is a running sum kept in the same transactions as the messages, so opening
 * a large database reads no messages at all.
 * @module
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { startCheckpoints } from "./checkpoints.ts";
import type { Backend, Batch, RoomState } from "./local_stream.ts";
import type { MessageEvent } from "./protocol.ts";
import type { StreamQuery } from "./store.ts";

/** The schema this module writes; a database with a higher `user_version` is refused. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE rooms (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  epoch TEXT NOT NULL,
  head INTEGER NOT NULL,
  lost INTEGER NOT NULL,
  written INTEGER NOT NULL
);
CREATE TABLE messages (
  seq INTEGER PRIMARY KEY,
  room INTEGER NOT NULL,
  off INTEGER NOT NULL,
  at INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_by_offset ON messages (room, off);
CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL);
INSERT INTO totals VALUES (1, 0);
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/** A stored message as reads return it. */
type StoredMessage = MessageEvent & { offset: number };

/** What an {@link SqliteBackend} keeps, and how hard it syncs. */
export interface SqliteOptions {
  /** Messages kept per room (its newest offsets); 0 keeps none, but heads still advance. */
  retainMessages: number;
  /** Milliseconds after which a message is deleted, and a room with none kept is forgotten. */
  retainMs: number;
  /** Stored message bytes (UTF-8 JSON) of all rooms together; the oldest go first when over. */
  retainBytes: number;
  /** The clock, in milliseconds; tests inject one. */
  now?: () => number;
  /**
   * `"normal"` (default): a commit survives a crash of the process but not always a power
   * loss. `"full"`: it survives a power loss too, at the cost of an fsync per batch.
   */
  synchronous?: "normal" | "full";
  /**
   * `PRAGMA max_page_count` for this connection: the file may grow to this many pages and a
   * write beyond fails with SQLite's real SQLITE_FULL. Meant for tests of a full disk.
   */
  maxPageCount?: number;
}

/** Why a store could not be opened: one line naming the path, the problem and the remedy. */
export class StoreOpenError extends Error {
  /** `path` is the directory or file at fault; `problem` and `remedy` complete the line. */
  constructor(path: string, problem: string, remedy: string, options?: ErrorOptions) {
    super(`cannot open the stream store at ${path}: ${oneLine(problem)}; ${remedy}`, options);
    this.name = "StoreOpenError";
  }
}

/** Rooms' streams in a SQLite database; every method is synchronous, as a Backend's must be. */
export class SqliteBackend implements Backend {
  readonly #db: DatabaseSync;
  readonly #options: SqliteOptions;
  readonly #now: () => number;
  readonly #sql: Record<keyof typeof STATEMENTS, StatementSync>;
  readonly #stopCheckpoints: () => void;
  /** `DIR/chorus.lock`, locked while this store is open. */
  readonly #lock: Deno.FsFile;

  private constructor(db: DatabaseSync, path: string, lock: Deno.FsFile, options: SqliteOptions) {
    this.#db = db;
    this.#lock = lock;
    this.#stopCheckpoints = startCheckpoints(db, path);
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#sql = Object.fromEntries(
      Object.entries(STATEMENTS).map(([name, sql]) => [name, db.prepare(sql)]),
    ) as Record<keyof typeof STATEMENTS, StatementSync>;
  }

  /**
   * Open (or create) `dir/chorus.db`. Every problem a deployment can fix — a path that is a
   * file, missing permissions, a read-only or corrupt file, a newer schema — is a
   * {@link StoreOpenError} here rather than a surprise at the first write.
   */
  static open(dir: string, options: SqliteOptions): SqliteBackend {
    makeDirectory(dir);
    const path = `${dir.replace(/\/+$/, "")}/chorus.db`;
    if (statOrUndefined(path)?.isDirectory) {
      throw new StoreOpenError(
        path,
        "it is a directory, not a database file",
        "remove it or give another directory",
      );
    }
    const lock = lockDirectory(dir);
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path, { timeout: 5000 });
      // Reading the header and the schema finds a file that is not a database here.
      const version = userVersion(db);
      if (version > SCHEMA_VERSION) {
        throw new StoreOpenError(
          path,
          `its schema version ${version} is newer than this chorus knows (${SCHEMA_VERSION})`,
          "run a newer chorus, or give this one another directory",
        );
      }
      db.exec("PRAGMA journal_mode = WAL");
      db.exec(`PRAGMA synchronous = ${options.synchronous === "full" ? "FULL" : "NORMAL"}`);
      if (options.maxPageCount !== undefined) {
        db.exec(`PRAGMA max_page_count = ${Math.floor(options.maxPageCount)}`);
      }
      // A write at open, so a read-only file or directory fails now, not at the first batch.
      db.exec("BEGIN IMMEDIATE");
      if (userVersion(db) === 0) db.exec(SCHEMA); // again: another process may have made it
      db.exec("UPDATE totals SET bytes = bytes WHERE id = 1; COMMIT");
      return new SqliteBackend(db, path, lock, options);
    } catch (err) {
      db?.close();
      lock.close();
      if (err instanceof StoreOpenError) throw err;
      throw openError(path, err);
    }
  }

  /** A room's state, or undefined when it has no stream. */
  room(room: string): RoomState | undefined {
    const row = this.#sql.room.get(room) as Omit<RoomState, "room"> | undefined;
    return row && { room, epoch: row.epoch, head: row.head, lost: row.lost };
  }

  /** Store a batch in one transaction, trimming each written room to `retainMessages`. */
  write(batch: Batch): void {
    const now = this.#now();
    const retain = this.#options.retainMessages;
    const rooms = new Map<string, { id: number; floor: number }>();
    let delta = 0;
    this.#transaction(() => {
      for (const r of batch.rooms) {
        const { id } = this.#sql.upsertRoom.get(r.room, r.epoch, r.head, r.lost, now) as {
          id: number;
        };
        rooms.set(r.room, { id, floor: r.head - retain });
      }
      for (const { room, event } of batch.messages) {
        const target = rooms.get(room) ?? this.#known(room, rooms);
        const offset = (event as StoredMessage).offset;
        if (offset <= target.floor) continue; // trimmed at once: not worth writing
        const body = JSON.stringify({
          id: event.id,
          from: event.from,
          text: event.text,
          ts: event.ts,
        });
        const bytes = utf8Length(body);
        this.#sql.insert.run(target.id, offset, now, bytes, body);
        delta += bytes;
      }
      for (const { id, floor } of rooms.values()) {
        if (floor < 1) continue;
        for (const row of this.#sql.trimRoom.iterate(id, floor)) delta -= row.bytes as number;
      }
      if (delta !== 0) this.#sql.addBytes.run(delta);
    });
  }

  /** The kept messages a query asks for, each with its `offset`, in the query's order. */
  read(room: string, query: StreamQuery): MessageEvent[] {
    let rows: unknown[];
    if ("after" in query) rows = this.#sql.after.all(room, query.after, query.limit);
    else if ("before" in query) rows = this.#sql.before.all(room, query.before, query.limit);
    else rows = this.#sql.last.all(room, query.last).reverse();
    return (rows as { off: number; body: string }[]).map(({ off, body }) => {
      const e = JSON.parse(body) as Omit<MessageEvent, "type">;
      const message: StoredMessage = {
        type: "message",
        id: e.id,
        from: e.from,
        text: e.text,
        ts: e.ts,
        offset: off,
      };
      return message;
    });
  }

  /** The oldest kept offset of a room; undefined when none is kept. */
  first(room: string): number | undefined {
    return (this.#sql.first.get(room) as { off: number } | undefined)?.off;
  }

  /**
   * Delete messages older than `retainMs`, then the oldest of all rooms until the total is
   * within `retainBytes`, then forget rooms with nothing kept that were not written for
   * `retainMs`. Costs what it deletes plus a few index seeks.
   */
  sweep(): void {
    const cutoff = this.#now() - this.#options.retainMs;
    this.#transaction(() => {
      let total = (this.#sql.totals.get() as { bytes: number }).bytes;
      const old = this.#lastWrittenBefore(cutoff);
      if (old !== undefined) total -= this.#deleteThrough(old);
      let walked = 0, through: number | undefined, from = 0;
      while (total - walked > this.#options.retainBytes) {
        const rows = this.#sql.oldest.all(from, 256) as { seq: number; bytes: number }[];
        if (rows.length === 0) break;
        for (const row of rows) {
          walked += row.bytes;
          through = from = row.seq;
          if (total - walked <= this.#options.retainBytes) break;
        }
      }
      if (through !== undefined) total -= this.#deleteThrough(through);
      this.#sql.forgetRooms.run(cutoff);
    });
  }

  /** Let go of the file; the last batch is already committed. */
  close(): void {
    this.#stopCheckpoints();
    this.#db.close();
    this.#lock.close(); // and with it, the lock
  }

  /** The id of a room a batch has messages for but no state: it must exist already. */
  #known(room: string, rooms: Map<string, { id: number; floor: number }>) {
    const row = this.#sql.roomId.get(room) as { id: number; head: number } | undefined;
    if (!row) throw new Error(`a batch has messages for room ${room}, which has no stream`);
    const target = { id: row.id, floor: row.head - this.#options.retainMessages };
    rooms.set(room, target);
    return target;
  }

  /** The greatest `seq` written before `cutoff`, by binary search: `at` grows with `seq`. */
  #lastWrittenBefore(cutoff: number): number | undefined {
    const probe = (seq: number) => this.#sql.atOrAfter.get(seq) as { seq: number; at: number };
    const oldest = this.#sql.atOrAfter.get(0) as { seq: number; at: number } | undefined;
    if (!oldest || oldest.at >= cutoff) return undefined;
    let lo = oldest.seq; // written before the cutoff
    let hi = (this.#sql.newest.get() as { seq: number }).seq + 1; // it and after: not
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      const row = probe(mid);
      if (row.at < cutoff) lo = row.seq;
      else hi = mid;
    }
    return lo;
  }

  /** Delete every message up to `seq`; returns their bytes, already taken off the total. */
  #deleteThrough(seq: number): number {
    const bytes = (this.#sql.bytesThrough.get(seq) as { bytes: number }).bytes;
    this.#sql.deleteThrough.run(seq);
    this.#sql.addBytes.run(-bytes);
    return bytes;
  }

  /** Run `body` in one write transaction; on any error roll back (if SQLite has not) and rethrow. */
  #transaction(body: () => void): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      body();
      this.#db.exec("COMMIT");
    } catch (err) {
      // SQLite may already have rolled back on its own (SQLITE_FULL does, for instance).
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw err;
    }
  }
}

/** Every statement, prepared once per backend. */
const STATEMENTS = {
  room: "SELECT epoch, head, lost FROM rooms WHERE name = ?",
  roomId: "SELECT id, head FROM rooms WHERE name = ?",
  upsertRoom: `INSERT INTO rooms (name, epoch, head, lost, written) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, head = excluded.head,
    lost = excluded.lost, written = excluded.written RETURNING id`,
  insert: "INSERT INTO messages (room, off, at, bytes, body) VALUES (?, ?, ?, ?, ?)",
  trimRoom: "DELETE FROM messages WHERE room = ? AND off <= ? RETURNING bytes",
  addBytes: "UPDATE totals SET bytes = bytes + ? WHERE id = 1",
  totals: "SELECT bytes FROM totals WHERE id = 1",
  after: `SELECT off, body FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?)
    AND off > ? ORDER BY off LIMIT ?`,
  before: `SELECT off, body FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?)
    AND off < ? ORDER BY off DESC LIMIT ?`,
  last: `SELECT off, body FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?)
    ORDER BY off DESC LIMIT ?`,
  first: `SELECT off FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?)
    ORDER BY off LIMIT 1`,
  atOrAfter: "SELECT seq, at FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1",
  newest: "SELECT max(seq) AS seq FROM messages",
  oldest: "SELECT seq, bytes FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
  bytesThrough: "SELECT total(bytes) AS bytes FROM messages WHERE seq <= ?",
  deleteThrough: "DELETE FROM messages WHERE seq <= ?",
  forgetRooms: `DELETE FROM rooms WHERE written < ?
    AND NOT EXISTS (SELECT 1 FROM messages WHERE room = rooms.id)`,
} as const;

/** Create `dir` (and its parents); answer the errors a deployment can fix. */
function makeDirectory(dir: string): void {
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      if (statOrUndefined(dir)?.isDirectory) return;
      throw new StoreOpenError(dir, "it is a file, not a directory", "give a directory", {
        cause: err,
      });
    }
    throw openError(dir, err);
  }
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw openError(path, err);
  }
}

/** The {@link StoreOpenError} for an error of the file system, of Deno or of SQLite. */
function openError(path: string, err: unknown): StoreOpenError {
  const message = err instanceof Error ? err.message : String(err);
  const dir = path.replace(/\/chorus\.db$/, "");
  if (err instanceof Deno.errors.NotCapable) {
    return new StoreOpenError(
      path,
      message,
      `grant --allow-read=${dir} --allow-write=${dir}`,
      { cause: err },
    );
  }
  // SQLite's own words: errors of exec() carry no errcode, only the message.
  const remedy = err instanceof Deno.errors.NotADirectory
    ? "part of that path is a file: give a directory path"
    : /file is not a database/.test(message)
    ? "move it away (a new database is then created) or give another directory"
    : /malformed/.test(message)
    ? "it is damaged: move it away (a new database is then created) or restore a backup"
    : /readonly/.test(message) || err instanceof Deno.errors.PermissionDenied
    ? "make the file and its directory writable (chmod, chattr -i, or a read-write mount)"
    : "check that the directory and the file are readable and writable";
  return new StoreOpenError(path, message, remedy, { cause: err });
}

/**
 * Take `DIR/chorus.lock` for this store, so a second chorus on the same directory stops at
 * start instead of numbering the same rooms' messages on its own. The lock is the operating
 * system's, so a process that dies (even by `kill -9`) lets go of it.
 */
function lockDirectory(dir: string): Deno.FsFile {
  const path = `${dir.replace(/\/+$/, "")}/chorus.lock`;
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true, write: true, create: true });
  } catch (err) {
    throw openError(path, err);
  }
  if (file.tryLockSync(true)) return file;
  file.close();
  throw new StoreOpenError(
    dir,
    "another chorus process is using it",
    "stop that one, or give this one another --data-dir (with --workers, one process serves all)",
  );
}

function userVersion(db: DatabaseSync): number {
  return (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ");
}

/** UTF-8 length of a well-formed string (JSON.stringify escapes lone surrogates). */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) n += c >= 0x800 && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return n;
}
