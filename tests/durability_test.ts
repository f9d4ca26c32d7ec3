/**
 * The SQLite store across process lifetimes (issue #13): real `main.ts` processes over a
 * temporary `--data-dir`, stopped with SIGTERM or killed with SIGKILL in the middle of a flood,
 * then started again on the same directory. What members saw before is still there, with the
 * same offsets and epoch, and resuming members get exactly what they missed. A data directory
 * that cannot be used stops the server at start with exit 2 and one line naming the path.
 */
import assert from "node:assert/strict";
import {
  type ChatClient,
  chatClient,
  type Event,
  type MainProcess,
  nextMessages,
  offsetRange,
  offsetsOf,
  ROOT,
  runMain,
  runToEnd,
  START_COMMAND,
  startMain,
  waitFor,
} from "./helpers.ts";

const KEY = "durability-test-api-key-0123456789";

/** How long a server that should refuse to start may run before the test gives up on it. */
const REFUSAL_TIMEOUT_MS = 15_000;

/**
 * `deno task start`'s command (from the helpers) with read and write access to `dir` added, as
 * an operator grants the data directory.
 */
function commandFor(dir: string): string[] {
  const args = START_COMMAND.slice(1).map((a) =>
    a.startsWith("--allow-read=") || a.startsWith("--allow-write=") ? `${a},${dir}` : a
  );
  assert.ok(args.some((a) => a.startsWith("--allow-read=")), "START_COMMAND grants --allow-read");
  if (!args.some((a) => a.startsWith("--allow-write="))) {
    args.splice(args.indexOf("main.ts"), 0, `--allow-write=${dir}`);
  }
  return [START_COMMAND[0]!, ...args];
}

/** Run `fn` with a fresh temporary directory, removed afterwards. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "chorus-durability-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Start `main.ts` on the SQLite store in `dir`, with `args` after. */
function startOn(dir: string, args: string[] = []): Promise<MainProcess> {
  return startMain(["--store", "sqlite", "--data-dir", dir, ...args], {}, commandFor(dir));
}

/** `ws://` URL of `path` on a running `main.ts`. */
function wsUrl(main: MainProcess, path: string): string {
  return `ws://127.0.0.1:${main.port}${path}`;
}

/** Every kept message of `room`, oldest first, paged through the history API. */
async function storedMessages(main: MainProcess, room: string): Promise<Event[]> {
  const out: Event[] = [];
  let after: number | null = 0;
  while (after !== null) {
    const url = `${main.url}api/rooms/history?room=${room}&after=${after}&limit=1000`;
    const res: Response = await fetch(url, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    out.push(...body.messages);
    after = body.next;
  }
  return out;
}

/** Every chat message a client receives from now on, as it arrives, in a list. */
function logMessages(client: ChatClient): Event[] {
  const log: Event[] = [];
  client.socket.addEventListener("message", (e) => {
    for (const line of (e.data as string).split("\n")) {
      const event = JSON.parse(line);
      if (event.type === "message") log.push(event);
    }
  });
  return log;
}

// ---------------------------------------------------------------------------------------------
// Restart and crash

Deno.test("messages survive a SIGTERM restart with the same offsets and epoch, in either sync mode", async () => {
  await withTempDir(async (dir) => {
    // Written with an fsync per commit, read back by the default mode: one file format.
    const first = await startOn(dir, ["--rate-limit", "0", "--store-sync", "full"]);
    let before: Event[] = [];
    let epoch = "";
    try {
      const { client, welcome } = await chatClient(wsUrl(first, "/kept"));
      epoch = welcome.epoch;
      for (let i = 0; i < 10; i++) client.say(`m${i}`);
      before = await nextMessages(client, 10);
      assert.deepEqual(offsetsOf(before), offsetRange(0, 10));
      first.child.kill("SIGTERM");
      const out = await first.output();
      assert.equal(out.code, 0, `a clean shutdown: ${out.stderr}`);
      await client.closed;
    } finally {
      await first.stop();
    }

    await using second = await startOn(dir, ["--rate-limit", "0"]);
    const { client: fresh, welcome } = await chatClient(wsUrl(second, "/kept"));
    assert.equal(welcome.epoch, epoch, "the same stream, not a new one");
    assert.equal(welcome.offset, 10);
    assert.equal(welcome.after, 0);
    assert.deepEqual(welcome.history, before, "every message, as it was sent");

    const { client: back, welcome: resumed } = await chatClient(
      wsUrl(second, `/kept?offset=4&epoch=${epoch}`),
    );
    assert.equal(resumed.recovered, true, "an offset from before the restart resumes");
    assert.deepEqual(resumed.history, before.slice(4));

    fresh.say("after restart");
    const next = await back.until("message");
    assert.deepEqual([next.offset, next.text], [11, "after restart"], "numbering goes on");
    await Promise.all([fresh.close(), back.close()]);
  });
});

Deno.test("deno task start's own permissions run the SQLite store under ./data, across a restart", async () => {
  // A directory of its own under ./data, which the start task grants: never a developer's store.
  const dir = `./data/test-${crypto.randomUUID().slice(0, 8)}`;
  try {
    let epoch = "";
    {
      await using first = await startMain(["--data-dir", dir]); // START_COMMAND as is
      const { client, welcome } = await chatClient(wsUrl(first, "/granted"));
      epoch = welcome.epoch;
      client.say("kept under ./data");
      assert.equal((await nextMessages(client, 1))[0]!.offset, 1);
      await client.close();
    }
    await using second = await startMain(["--data-dir", dir]);
    const { client, welcome } = await chatClient(wsUrl(second, "/granted"));
    assert.equal(welcome.epoch, epoch);
    assert.deepEqual(welcome.history.map((m: Event) => m.text), ["kept under ./data"]);
    await client.close();
  } finally {
    await Deno.remove(`${ROOT}${dir.slice(2)}`, { recursive: true });
  }
});

Deno.test("after a SIGKILL mid-flood, every message a member saw is kept and resumes are exact", async () => {
  await withTempDir(async (dir) => {
    const TOTAL = 5000;
    const args = ["--rate-limit", "0", "--api-key", KEY];
    const crashed = await startOn(dir, args);
    const logs: Event[][] = [];
    let epoch = "";
    try {
      const subscribers: ChatClient[] = [];
      for (let i = 0; i < 3; i++) {
        const { client, welcome } = await chatClient(wsUrl(crashed, "/flood"));
        epoch = welcome.epoch;
        subscribers.push(client);
        logs.push(logMessages(client));
      }
      // The publisher keeps up to 100 messages in flight, sending one more per copy it hears.
      const { client: publisher } = await chatClient(wsUrl(crashed, "/flood"));
      let sent = 0;
      const sendOne = () => {
        if (sent < TOTAL && publisher.socket.readyState === WebSocket.OPEN) {
          publisher.say(`m${sent++}`);
        }
      };
      publisher.socket.addEventListener("message", (e) => {
        for (const line of (e.data as string).split("\n")) {
          if (JSON.parse(line).type === "message") sendOne();
        }
      });
      for (let i = 0; i < 100; i++) sendOne();

      await waitFor(
        () => logs.every((log) => log.length >= 300),
        "every subscriber to see some hundreds of messages",
      );
      crashed.child.kill("SIGKILL");
      await Promise.all([...subscribers, publisher].map((c) => c.closed));
      assert.ok(sent < TOTAL, `the server was killed mid-flood (${sent} of ${TOTAL} sent)`);
    } finally {
      await crashed.stop();
    }

    for (const log of logs) {
      assert.deepEqual(
        offsetsOf(log),
        offsetRange(0, log.length),
        "in order, none twice, none skipped",
      );
      for (const m of log) assert.equal(m.text, `m${m.offset - 1}`);
    }

    await using restarted = await startOn(dir, args);
    const stored = await storedMessages(restarted, "/flood");
    const head = stored.length;
    assert.deepEqual(
      offsetsOf(stored),
      offsetRange(0, head),
      "the store holds one unbroken prefix",
    );
    for (const m of stored) assert.equal(m.text, `m${m.offset - 1}`);
    for (const [i, log] of logs.entries()) {
      assert.ok(log.length <= head, `subscriber ${i} saw nothing the store lost`);
      assert.deepEqual(log, stored.slice(0, log.length), `subscriber ${i}: kept as seen`);
    }

    for (const [i, log] of logs.entries()) {
      const last = log.at(-1)!.offset;
      const { client, welcome } = await chatClient(
        wsUrl(restarted, `/flood?offset=${last}&epoch=${epoch}`),
      );
      assert.equal(welcome.recovered, true, `subscriber ${i} recovers`);
      assert.equal(welcome.epoch, epoch);
      assert.equal(welcome.after, last);
      assert.equal(welcome.offset, head);
      const rest = await nextMessages(client, head - last - welcome.history.length);
      assert.deepEqual(
        [...welcome.history, ...rest],
        stored.slice(last),
        `subscriber ${i}: exactly what the store has after offset ${last}, in order`,
      );
      await client.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A data directory that cannot be used

/**
 * Run `main.ts` with `command` and `args` to its end; it must refuse to start: exit 2, nothing
 * on stdout, and exactly one `chorus: ` line on stderr, which is returned.
 */
async function refusal(command: string[], args: string[]): Promise<string> {
  const out = await runToEnd(command[0]!, {
    args: [...command.slice(1), "--port", "0", "--hostname", "127.0.0.1", ...args],
    cwd: ROOT,
    env: {},
  }, REFUSAL_TIMEOUT_MS);
  assert.equal(out.code, 2, `exit 2: stdout=${out.stdout} stderr=${out.stderr}`);
  assert.equal(out.stdout, "", "never listened");
  const lines = out.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line: ${out.stderr}`);
  assert.match(lines[0]!, /^chorus: /);
  return lines[0]!;
}

Deno.test("a regular file as --data-dir stops the server with exit 2 and one line naming it", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/not-a-directory`;
    await Deno.writeTextFile(file, "a file, not a directory\n");
    const line = await refusal(commandFor(dir), ["--data-dir", file]);
    assert.ok(line.includes(file), `names ${file}: ${line}`);
  });
});

Deno.test("a second chorus on the same --data-dir stops with exit 2 and one line; the first goes on", async () => {
  await withTempDir(async (dir) => {
    await using first = await startOn(dir);
    const line = await refusal(commandFor(dir), ["--data-dir", dir]);
    assert.match(line, /another chorus process is using it/);
    assert.ok(line.includes(dir), `names ${dir}: ${line}`);
    const { client, welcome } = await chatClient(wsUrl(first, "/still"));
    assert.equal(welcome.offset, 0, "the first one still serves");
    await client.close();
  });
});

Deno.test("a corrupt chorus.db stops the server with exit 2 and one line naming it", async () => {
  await withTempDir(async (dir) => {
    const garbage = crypto.getRandomValues(new Uint8Array(64 * 1024));
    await Deno.writeFile(`${dir}/chorus.db`, garbage);
    const line = await refusal(commandFor(dir), ["--data-dir", dir]);
    assert.ok(line.includes(dir), `names ${dir}: ${line}`);
    const kept = await Deno.readFile(`${dir}/chorus.db`);
    assert.deepEqual(kept, garbage, "the file is left as it was, for the operator to look at");
  });
});

Deno.test("a --data-dir Deno may not touch stops the server with exit 2 and a permission hint", async () => {
  await withTempDir(async (dir) => {
    const elsewhere = `${dir}/elsewhere`;
    // Exactly what `deno task start` grants: the data directory is not among its paths.
    const line = await refusal(START_COMMAND, ["--data-dir", elsewhere]);
    assert.ok(line.includes(elsewhere), `names ${elsewhere}: ${line}`);
    assert.match(line, /--allow-(read|write)/, "says which permission to grant");
    await assert.rejects(Deno.stat(elsewhere), Deno.errors.NotFound, "nothing was created");
  });
});

Deno.test("--store memory with --redis-url, and --store redis without it, exit 2 with one error line", async () => {
  for (
    const [args, env, pattern] of [
      [["--store", "memory", "--redis-url", "redis://127.0.0.1:6379"], {}, /--redis-url/],
      [["--store", "redis"], {}, /--store redis needs --redis-url/],
      [[], { CHORUS_STORE: "redis" }, /^chorus: CHORUS_STORE: .*needs --redis-url/],
    ] as [string[], Record<string, string>, RegExp][]
  ) {
    const out = await runMain(args, env);
    const label = `${args.join(" ")} ${JSON.stringify(env)}`;
    assert.equal(out.code, 2, `${label}: ${out.stderr}`);
    assert.equal(out.stdout, "", label);
    // One error line, then the --help hint every bad flag gets.
    const lines = out.stderr.split("\n");
    assert.equal(lines.length, 3, `${label}: ${out.stderr}`);
    assert.match(lines[0]!, /^chorus: /);
    assert.match(lines[0]!, pattern);
    assert.equal(lines[1], "Run 'chorus --help' for usage.");
    assert.equal(lines[2], "");
  }
});
