import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Batch } from "../src/local_stream.ts";
import type { MessageEvent } from "../src/protocol.ts";
import { SqliteBackend, type SqliteOptions, StoreOpenError } from "../src/sqlite_store.ts";
import { waitFor } from "./events.ts";

type Stored = MessageEvent & { offset: number };

const generous: SqliteOptions = { retainMessages: 1000, retainMs: 3_600_000, retainBytes: 1e9 };

function message(room: string, offset: number, text = `${room}:${offset}`): Stored {
  return {
    type: "message",
    id: `${room}-${offset}`,
    from: { id: "u1", name: "Ann" },
    text,
    ts: 1_700_000_000_000 + offset,
    offset,
  };
}

/** A batch of `count` messages to `room` after offset `after`, setting its head to the last. */
function batch(room: string, after: number, count: number, epoch = "e1", lost = 0): Batch {
  const messages = Array.from({ length: count }, (_, i) => ({
    room,
    event: message(room, after + i + 1),
  }));
  return { rooms: [{ room, epoch, head: after + count, lost }], messages };
}

function offsets(messages: MessageEvent[]): number[] {
  return messages.map((m) => (m as Stored).offset);
}

/** Bytes a message is stored as: the JSON the backend keeps of it. */
function storedBytes(m: Stored): number {
  return new TextEncoder().encode(
    JSON.stringify({ id: m.id, from: m.from, text: m.text, ts: m.ts }),
  )
    .length;
}

async function withDir(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "chorus-sqlite-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function openError(dir: string, options: SqliteOptions = generous): StoreOpenError {
  const err = (() => {
    try {
      SqliteBackend.open(dir, options).close();
    } catch (err) {
      return err;
    }
    assert.fail(`open(${dir}) succeeded`);
  })();
  assert.ok(err instanceof StoreOpenError, String(err));
  assert.ok(!err.message.includes("\n"), err.message);
  return err;
}

Deno.test("a written batch reads back whole: room state and messages with offsets", () =>
  withDir((dir) => {
    const store = SqliteBackend.open(dir, generous);
    assert.equal(store.room("r"), undefined);
    assert.deepEqual(store.read("r", { last: 10 }), []);
    assert.equal(store.first("r"), undefined);
    const b = batch("r", 0, 3, "ep1", 0);
    b.messages[1]!.event.text = 'héllo 👋 "quoted"\n';
    store.write(b);
    assert.deepEqual(store.room("r"), { room: "r", epoch: "ep1", head: 3, lost: 0 });
    assert.deepEqual(store.read("r", { last: 10 }), b.messages.map((m) => m.event));
    assert.equal(store.first("r"), 1);
    store.close();
  }));

Deno.test("heads, epochs, lost and messages survive close and reopen", () =>
  withDir((dir) => {
    const first = SqliteBackend.open(dir, generous);
    first.write(batch("a", 0, 5, "ea"));
    first.write(batch("b", 0, 2, "eb"));
    first.write({ rooms: [{ room: "b", epoch: "eb", head: 4, lost: 4 }], messages: [] });
    first.close();
    const again = SqliteBackend.open(dir, generous);
    assert.deepEqual(again.room("a"), { room: "a", epoch: "ea", head: 5, lost: 0 });
    assert.deepEqual(again.room("b"), { room: "b", epoch: "eb", head: 4, lost: 4 });
    assert.deepEqual(offsets(again.read("a", { last: 10 })), [1, 2, 3, 4, 5]);
    assert.deepEqual(again.read("b", { last: 10 }), batch("b", 0, 2).messages.map((m) => m.event));
    again.write(batch("b", 4, 1, "eb"));
    assert.deepEqual(offsets(again.read("b", { after: 0, limit: 10 })), [1, 2, 5]);
    again.close();
  }));

Deno.test("each room keeps only its newest retainMessages, others untouched", () =>
  withDir((dir) => {
    const store = SqliteBackend.open(dir, { ...generous, retainMessages: 3 });
    store.write(batch("a", 0, 2));
    store.write(batch("b", 0, 2));
    store.write(batch("a", 2, 5)); // more than retained in one batch
    store.write(batch("a", 7, 1));
    assert.deepEqual(offsets(store.read("a", { last: 10 })), [6, 7, 8]);
    assert.equal(store.first("a"), 6);
    assert.deepEqual(offsets(store.read("b", { last: 10 })), [1, 2]);
    store.close();
  }));

Deno.test("retainMessages 0 keeps no message but heads still advance", () =>
  withDir((dir) => {
    const store = SqliteBackend.open(dir, { ...generous, retainMessages: 0 });
    store.write(batch("a", 0, 4));
    assert.deepEqual(store.room("a"), { room: "a", epoch: "e1", head: 4, lost: 0 });
    assert.deepEqual(store.read("a", { last: 10 }), []);
    assert.equal(store.first("a"), undefined);
    store.close();
  }));

Deno.test("sweep deletes messages older than retainMs by the injected clock", () =>
  withDir((dir) => {
    let now = 10_000;
    const store = SqliteBackend.open(dir, { ...generous, retainMs: 1000, now: () => now });
    store.write(batch("a", 0, 3));
    store.write(batch("b", 0, 2));
    now = 10_500;
    store.write(batch("a", 3, 2));
    now = 11_000;
    store.write(batch("b", 2, 1));
    now = 11_400; // cutoff 10_400: what was written at 10_000 goes
    store.sweep();
    assert.deepEqual(offsets(store.read("a", { last: 10 })), [4, 5]);
    assert.deepEqual(offsets(store.read("b", { last: 10 })), [3]);
    assert.equal(store.first("a"), 4);
    now = 11_600; // cutoff 10_600: a's last messages go, and a, written at 10_500, with them
    store.sweep();
    assert.deepEqual(store.read("a", { last: 10 }), []);
    assert.equal(store.room("a"), undefined);
    assert.deepEqual(offsets(store.read("b", { last: 10 })), [3]);
    store.close();
  }));

Deno.test("sweep deletes the oldest messages of all rooms until within retainBytes", () =>
  withDir((dir) => {
    const size = storedBytes(message("a", 1));
    const store = SqliteBackend.open(dir, { ...generous, retainBytes: Math.floor(3.5 * size) });
    for (let i = 0; i < 3; i++) {
      store.write(batch("a", i, 1));
      store.write(batch("b", i, 1));
    }
    store.sweep(); // written a1 b1 a2 b2 a3 b3: the newest three fit
    assert.deepEqual(offsets(store.read("a", { last: 10 })), [3]);
    assert.deepEqual(offsets(store.read("b", { last: 10 })), [2, 3]);
    store.close();
    // The running total of bytes is kept in the file: a reopened store sweeps by it.
    const again = SqliteBackend.open(dir, { ...generous, retainBytes: Math.floor(1.5 * size) });
    again.sweep();
    assert.deepEqual(again.read("a", { last: 10 }), []);
    assert.deepEqual(offsets(again.read("b", { last: 10 })), [3]);
    assert.equal(again.room("a")?.head, 3);
    again.close();
  }));

Deno.test("sweep forgets rooms with nothing kept that were not written for retainMs", () =>
  withDir((dir) => {
    let now = 0;
    const options = { ...generous, retainMessages: 0, retainMs: 1000, now: () => now };
    const store = SqliteBackend.open(dir, options);
    store.write(batch("cold", 0, 2));
    now = 500;
    store.write(batch("warm", 0, 1));
    now = 1000;
    store.sweep();
    assert.equal(store.room("cold")?.head, 2, "written exactly retainMs ago: kept");
    now = 1001;
    store.sweep();
    assert.equal(store.room("cold"), undefined);
    assert.equal(store.room("warm")?.head, 1);
    store.close();
  }));

Deno.test("read: after ascending, before newest-first, last oldest-first, each with its limit", () =>
  withDir((dir) => {
    const store = SqliteBackend.open(dir, generous);
    store.write(batch("r", 0, 10));
    store.write(batch("other", 0, 3));
    assert.deepEqual(offsets(store.read("r", { after: 0, limit: 3 })), [1, 2, 3]);
    assert.deepEqual(offsets(store.read("r", { after: 8, limit: 5 })), [9, 10]);
    assert.deepEqual(offsets(store.read("r", { after: 10, limit: 5 })), []);
    assert.deepEqual(offsets(store.read("r", { before: 5, limit: 2 })), [4, 3]);
    assert.deepEqual(offsets(store.read("r", { before: 1, limit: 2 })), []);
    assert.deepEqual(offsets(store.read("r", { before: 99, limit: 1 })), [10]);
    assert.deepEqual(offsets(store.read("r", { last: 3 })), [8, 9, 10]);
    assert.deepEqual(offsets(store.read("r", { last: 50 })), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(store.read("nobody", { last: 5 }), []);
    store.close();
  }));

Deno.test("a batch that fails half-way stores nothing of it, rooms included", () =>
  withDir((dir) => {
    const store = SqliteBackend.open(dir, generous);
    store.write(batch("a", 0, 2));
    const bad = batch("a", 2, 2);
    bad.messages.push({ room: "unknown", event: message("unknown", 1) });
    assert.throws(() => store.write(bad), /unknown/);
    assert.equal(store.room("a")?.head, 2);
    assert.equal(store.room("unknown"), undefined);
    assert.deepEqual(offsets(store.read("a", { last: 10 })), [1, 2]);
    store.write(batch("a", 2, 2));
    assert.deepEqual(offsets(store.read("a", { last: 10 })), [1, 2, 3, 4]);
    store.close();
  }));

Deno.test("a write into a full database throws SQLITE_FULL, stores nothing, and works again with room", () =>
  withDir((dir) => {
    const full = { ...generous, maxPageCount: 24 };
    const store = SqliteBackend.open(dir, full);
    const big = "x".repeat(1000);
    let head = 0;
    let failed: Batch | undefined;
    while (!failed) {
      const b = batch("r", head, 8);
      for (const m of b.messages) m.event.text = big;
      try {
        store.write(b);
        head += 8;
      } catch (err) {
        assert.match(String(err), /full/);
        failed = b;
      }
      assert.ok(head < 10_000, "the database never filled up");
    }
    assert.equal(store.room("r")?.head, head);
    assert.equal(store.read("r", { last: 1000 }).length, head);
    assert.equal(store.first("r"), 1);
    store.close();
    const roomier = SqliteBackend.open(dir, { ...full, maxPageCount: 10_000 });
    assert.equal(roomier.room("r")?.head, head);
    roomier.write(failed);
    assert.equal(roomier.read("r", { last: 1000 }).length, head + 8);
    roomier.close();
  }));

Deno.test("open: a data directory that is a file is a StoreOpenError naming it", () =>
  withDir((dir) => {
    const file = `${dir}/file`;
    Deno.writeTextFileSync(file, "not a directory");
    assert.match(openError(file).message, new RegExp(`${file}: it is a file`));
    assert.match(openError(`${file}/sub`).message, new RegExp(`${file}/sub`));
  }));

Deno.test("open: a chorus.db that is a directory is a StoreOpenError naming it", () =>
  withDir((dir) => {
    Deno.mkdirSync(`${dir}/chorus.db`);
    assert.match(openError(dir).message, new RegExp(`${dir}/chorus.db: it is a directory`));
  }));

Deno.test("open: a chorus.db that is not a database is found at open", () =>
  withDir((dir) => {
    Deno.writeTextFileSync(`${dir}/chorus.db`, "garbage ".repeat(2000));
    assert.match(openError(dir).message, new RegExp(`${dir}/chorus.db: file is not a database`));
  }));

Deno.test("open: a database of a newer schema version is refused", () =>
  withDir((dir) => {
    SqliteBackend.open(dir, generous).close();
    const db = new DatabaseSync(`${dir}/chorus.db`);
    db.exec("PRAGMA user_version = 99");
    db.close();
    assert.match(openError(dir).message, /chorus\.db: its schema version 99 is newer/);
  }));

Deno.test("open: a journal that cannot be written is found at open", () =>
  withDir((dir) => {
    SqliteBackend.open(dir, generous).close();
    Deno.mkdirSync(`${dir}/chorus.db-wal`); // fails as root too, unlike chmod
    assert.match(openError(dir).message, new RegExp(`${dir}/chorus.db: .*readable and writable`));
  }));

/** Make `path` unwritable even for root (chattr +i), or by mode for others; undo() after. */
function readOnly(path: string): { undo: () => void } | undefined {
  if (Deno.uid() !== 0) {
    const mode = Deno.statSync(path).mode!;
    Deno.chmodSync(path, Deno.statSync(path).isDirectory ? 0o555 : 0o444);
    return { undo: () => Deno.chmodSync(path, mode) };
  }
  const chattr = (flag: string) =>
    new Deno.Command("chattr", { args: [flag, path], stderr: "null" }).outputSync().success;
  return chattr("+i") ? { undo: () => assert.ok(chattr("-i")) } : undefined;
}

const canMakeReadOnly = await withProbe();
async function withProbe(): Promise<boolean> {
  const file = await Deno.makeTempFile();
  try {
    const ro = readOnly(file);
    ro?.undo();
    return ro !== undefined;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false; // no chattr here
    throw err;
  } finally {
    await Deno.remove(file);
  }
}

Deno.test({
  name: "open: a read-only database file or directory is a StoreOpenError naming it",
  ignore: !canMakeReadOnly,
  fn: () =>
    withDir((dir) => {
      const data = `${dir}/data`;
      SqliteBackend.open(data, generous).close();
      const file = readOnly(`${data}/chorus.db`)!;
      try {
        assert.match(openError(data).message, new RegExp(`${data}/chorus.db: .*readonly`));
      } finally {
        file.undo();
      }
      const empty = `${dir}/empty`;
      Deno.mkdirSync(empty);
      const directory = readOnly(empty)!;
      try {
        // The lock file is the first thing a store writes in its directory.
        assert.match(openError(empty).message, new RegExp(`${empty}/chorus\\.lock: .*writable`));
      } finally {
        directory.undo();
      }
    }),
});

Deno.test("open: without --allow-write or --allow-read, the error says which to grant", () =>
  withDir(async (dir) => {
    const fixture = new URL("./fixtures/sqlite_open.ts", import.meta.url).pathname;
    for (const allow of ["--allow-read", `--allow-write=${dir}`]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", allow, fixture, `${dir}/data`],
        stderr: "inherit",
      }).output();
      const { name, message } = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.equal(name, "StoreOpenError", message);
      assert.match(message, new RegExp(`${dir}/data`));
      assert.match(message, /grant --allow-read=\S+ --allow-write=/);
    }
  }));

Deno.test("crash safety: every batch whose write returned survives a SIGKILL", () =>
  withDir(async (dir) => {
    const fixture = new URL("./fixtures/sqlite_writer.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-write", fixture, dir],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const printed: string[] = [];
    let text = "";
    const decoder = new TextDecoder();
    let killed = false;
    for await (const chunk of child.stdout) {
      text += decoder.decode(chunk, { stream: true });
      const lines = text.split("\n");
      text = lines.pop()!;
      printed.push(...lines);
      if (printed.length >= 300 && !killed) {
        child.kill("SIGKILL"); // mid-stream; what it printed until then still counts
        killed = true;
      }
    }
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    const store = SqliteBackend.open(dir, generous);
    for (const line of printed) {
      const [room, last, count] = line.split(" ");
      const head = Number(last), n = Number(count);
      const got = store.read(room!, { after: head - n, limit: n });
      const want = Array.from({ length: n }, (_, i) => `${room}:${head - n + i + 1}`);
      assert.deepEqual(got.map((m) => m.text), want, line);
    }
    for (const room of ["a", "b", "c"]) {
      const head = store.room(room)?.head ?? 0;
      const all = store.read(room, { after: 0, limit: head + 1 });
      assert.deepEqual(offsets(all), Array.from({ length: head }, (_, i) => i + 1));
    }
    store.close();
  }));

Deno.test("commits only append to the log; a worker thread copies it into the database file", () =>
  withDir(async (dir) => {
    const store = SqliteBackend.open(dir, generous);
    try {
      const size = () => Deno.statSync(`${dir}/chorus.db`).size;
      const before = size();
      store.write(batch("/cp", 0, 500));
      // The commit itself left the database file alone (its automatic checkpoint is only a far
      // backstop), so a file that grows was written by the checkpoint worker.
      assert.equal(size(), before, "the commit wrote to the log only");
      await waitFor(() => size() > before, "the checkpoint worker to copy the log");
      assert.deepEqual(offsets(store.read("/cp", { last: 2 })), [499, 500]);
    } finally {
      store.close();
    }
  }));

Deno.test("a second store on the same directory is refused while the first is open", () =>
  withDir((dir) => {
    const first = SqliteBackend.open(dir, generous);
    try {
      assert.match(openError(dir).message, /another chorus process is using it/);
    } finally {
      first.close();
    }
    SqliteBackend.open(dir, generous).close(); // closing let go of the lock
  }));
