/**
 * Offsets, epochs and resuming (issue #13) over real sockets, against in-process servers with
 * the memory store: what a `welcome` says about the room's stream, offsets per room, resuming
 * with `?offset=&epoch=` or `?since=` (exactly the missed messages, or `recovered: false` and
 * the latest), a gap longer than `--history` arriving as `message` events right after the
 * welcome, malformed resumes refused before the upgrade, and paging the history API.
 */
import assert from "node:assert/strict";
import {
  ChatClient,
  chatClient,
  type Event,
  nextMessages,
  offsetRange,
  offsetsOf,
  rawClient,
  startServer,
  type TestServer,
  upgradeOverTcp,
  waitFor,
} from "./helpers.ts";

const KEY = "resume-test-api-key-0123456789";

/** Run `fn` against a fresh in-process server, closed afterwards whatever happens. */
async function withServer(
  overrides: Parameters<typeof startServer>[0],
  fn: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = startServer({ rateLimit: 0, ...overrides });
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

/** Say every text from `sender` and wait until its own copies come back; returns them. */
async function sayAll(sender: ChatClient, texts: string[]): Promise<Event[]> {
  for (const text of texts) sender.say(text);
  const got = await nextMessages(sender, texts.length);
  assert.deepEqual(got.map((m) => m.text), texts);
  return got;
}

/**
 * The next `n` chat messages, like {@link messages}, but failing at once, with the close code,
 * if the server closes the socket before they all arrived.
 */
async function messagesWhileOpen(client: ChatClient, n: number): Promise<Event[]> {
  const out: Event[] = [];
  const closed = client.closed.then((c) => `closed ${c.code} ${c.reason}`);
  while (out.length < n) {
    const next = await Promise.race([client.until("message"), closed]);
    if (typeof next === "string") {
      throw new Error(`the server ${next} after ${out.length} of ${n} messages`);
    }
    out.push(next);
  }
  return out;
}

/** `n` texts named `prefix0`, `prefix1`, …, starting at `start`. */
function texts(prefix: string, n: number, start = 0): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${start + i}`);
}

/** A chat client resuming at `offset` of `epoch` in `room`. */
function resume(server: TestServer, room: string, offset: number | string, epoch: string) {
  return chatClient(server.ws(`${room}?offset=${offset}&epoch=${encodeURIComponent(epoch)}`));
}

// ---------------------------------------------------------------------------------------------
// Offsets and the welcome

Deno.test("welcome carries the room's epoch, its latest offset and the offset its history follows", async () => {
  await withServer({ history: 3 }, async (server) => {
    const { client: a, welcome: w0 } = await chatClient(server.ws("/w"));
    assert.match(w0.epoch, /^\S+$/, "an epoch from the start");
    assert.equal(w0.offset, 0, "an empty stream is at offset 0");
    assert.equal(w0.after, 0);
    assert.deepEqual(w0.history, []);
    assert.equal(w0.recovered, true, "nothing asked for, nothing missing");

    const sent = await sayAll(a, texts("m", 5));
    assert.deepEqual(offsetsOf(sent), [1, 2, 3, 4, 5]);

    const { client: b, welcome: w1 } = await chatClient(server.ws("/w"));
    assert.equal(w1.epoch, w0.epoch, "the same stream");
    assert.equal(w1.offset, 5);
    assert.equal(w1.after, 2, "history is everything after offset 2");
    assert.deepEqual(w1.history, sent.slice(2));
    assert.equal(w1.recovered, true);
    await Promise.all([a.close(), b.close()]);
  });
});

Deno.test("offsets are consecutive per room, the same for every member, and independent across rooms", async () => {
  await withServer({}, async (server) => {
    const { client: a1 } = await chatClient(server.ws("/one"));
    const { client: a2 } = await chatClient(server.ws("/one"));
    const { client: b } = await chatClient(server.ws("/two"));
    // Interleaved sends into both rooms.
    for (let i = 0; i < 20; i++) {
      a1.say(`a${i}`);
      b.say(`b${i}`);
    }
    const [seenA1, seenA2, seenB] = await Promise.all([
      nextMessages(a1, 20),
      nextMessages(a2, 20),
      nextMessages(b, 20),
    ]);
    assert.deepEqual(offsetsOf(seenA1), offsetRange(0, 20));
    assert.deepEqual(seenA1.map((m) => m.text), texts("a", 20));
    assert.deepEqual(seenA2, seenA1, "every member hears the same numbering");
    assert.deepEqual(offsetsOf(seenB), offsetRange(0, 20), "the other room counts on its own");
    assert.deepEqual(seenB.map((m) => m.text), texts("b", 20));
    await Promise.all([a1.close(), a2.close(), b.close()]);
  });
});

Deno.test("a raw client's text frames get offsets in the room's stream; its binary frames do not", async () => {
  await withServer({}, async (server) => {
    const { client: chat } = await chatClient(server.ws("/mixed"));
    const raw = await rawClient(server.ws("/mixed"));
    chat.say("chat-1");
    assert.equal((await chat.until("message")).offset, 1);
    raw.send("raw-2");
    const fromRaw = await chat.until("message");
    assert.equal(fromRaw.text, "raw-2");
    assert.equal(fromRaw.offset, 2, "a raw text frame is a numbered chat message");
    raw.send(new Uint8Array([1, 2, 3]));
    raw.send("raw-3");
    const next = await chat.until("message");
    assert.deepEqual([next.text, next.offset], ["raw-3", 3], "the binary frame took no offset");
    chat.say("chat-4");
    assert.equal((await chat.until("message")).offset, 4);

    const { client: late, welcome } = await chatClient(server.ws("/mixed"));
    assert.deepEqual(welcome.history.map((m: Event) => [m.offset, m.text]), [
      [1, "chat-1"],
      [2, "raw-2"],
      [3, "raw-3"],
      [4, "chat-4"],
    ]);
    await Promise.all([chat.close(), raw.close(), late.close()]);
  });
});

// ---------------------------------------------------------------------------------------------
// Resuming with ?offset=&epoch=

Deno.test("resuming with the right epoch gets exactly the missed messages, once, and recovered", async () => {
  await withServer({ history: 50 }, async (server) => {
    const { client: a } = await chatClient(server.ws("/r"));
    const { client: b, welcome } = await chatClient(server.ws("/r"));
    await sayAll(a, texts("m", 3));
    const seen = await nextMessages(b, 3);
    await b.close();

    const missed = await sayAll(a, texts("m", 4, 3));
    const last = seen.at(-1)!.offset;
    const { client: back, welcome: w } = await resume(server, "/r", last, welcome.epoch);
    assert.equal(w.recovered, true);
    assert.equal(w.epoch, welcome.epoch);
    assert.equal(w.after, last);
    assert.equal(w.offset, 7);
    assert.deepEqual(w.history, missed, "exactly the missed messages, as they were sent");

    a.say("new");
    const after = await back.until("message");
    assert.deepEqual([after.offset, after.text], [8, "new"], "no duplicate before the new one");
    await Promise.all([a.close(), back.close()]);
  });
});

Deno.test("resuming after more than --history: the welcome holds the first, the rest follow in order before anything new", async () => {
  await withServer({ history: 5 }, async (server) => {
    const { client: a } = await chatClient(server.ws("/long"));
    const { client: b, welcome } = await chatClient(server.ws("/long"));
    await sayAll(a, texts("m", 3));
    await nextMessages(b, 3);
    await b.close();
    const missed = await sayAll(a, texts("m", 40, 3)); // offsets 4..43

    const back = new ChatClient(server.ws(`/long?offset=3&epoch=${welcome.epoch}`));
    await back.opened;
    a.say("new"); // sent once the resume has begun
    const w = await back.next("welcome");
    assert.equal(w.recovered, true);
    assert.equal(w.after, 3);
    assert.deepEqual(w.history, missed.slice(0, 5), "the first --history missed messages");
    // The welcome's `offset` is the head when it was made: 43, or 44 if "new" came first.
    const rest = await nextMessages(back, 35 + 1);
    assert.deepEqual(offsetsOf(rest), offsetRange(8, 44), "every offset once, in order");
    assert.deepEqual(rest.slice(0, 35), missed.slice(5));
    assert.equal(rest.at(-1)!.text, "new", "the new message comes after the whole gap");
    await Promise.all([a.close(), back.close()]);
  });
});

Deno.test("a wrong epoch is not recovered: the latest --history, with `after` where they start", async () => {
  await withServer({ history: 5 }, async (server) => {
    const { client: a, welcome: w0 } = await chatClient(server.ws("/e"));
    const sent = await sayAll(a, texts("m", 12));
    const { client: b, welcome } = await resume(server, "/e", 3, "not-the-epoch");
    assert.equal(welcome.recovered, false);
    assert.equal(welcome.epoch, w0.epoch, "the room's real epoch, to resume with next time");
    assert.equal(welcome.offset, 12);
    assert.equal(welcome.after, 7);
    assert.deepEqual(welcome.history, sent.slice(7));
    await Promise.all([a.close(), b.close()]);
  });
});

Deno.test("an offset trimmed from the store resumes from the oldest kept message, not recovered", async () => {
  await withServer({ history: 5, retainMessages: 10 }, async (server) => {
    const { client: a, welcome: w0 } = await chatClient(server.ws("/trim"));
    const sent = await sayAll(a, texts("m", 30)); // the store keeps 21..30
    const { client: b, welcome } = await resume(server, "/trim", 2, w0.epoch);
    assert.equal(welcome.recovered, false, "offsets 3..20 are gone");
    assert.equal(welcome.after, 20, "resumed from the oldest kept message, 21");
    assert.equal(welcome.offset, 30);
    assert.deepEqual(welcome.history, sent.slice(20, 25));
    assert.deepEqual(await nextMessages(b, 5), sent.slice(25), "then everything kept after them");
    a.say("new");
    assert.equal((await b.until("message")).offset, 31, "and nothing twice");
    await Promise.all([a.close(), b.close()]);
  });
});

Deno.test("an offset beyond the room's latest is not recovered: the latest --history", async () => {
  await withServer({ history: 5 }, async (server) => {
    const { client: a, welcome: w0 } = await chatClient(server.ws("/beyond"));
    const sent = await sayAll(a, texts("m", 8));
    const { client: b, welcome } = await resume(server, "/beyond", 9, w0.epoch);
    assert.equal(welcome.recovered, false);
    assert.equal(welcome.offset, 8);
    assert.equal(welcome.after, 3);
    assert.deepEqual(welcome.history, sent.slice(3));
    const { client: c, welcome: atHead } = await resume(server, "/beyond", 8, w0.epoch);
    assert.equal(atHead.recovered, true, "the latest offset itself is a complete resume");
    assert.deepEqual(atHead.history, []);
    assert.equal(atHead.after, 8);
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

Deno.test("?since= an id among the recent messages recovers what followed it; an unknown id does not", async () => {
  await withServer({ history: 5 }, async (server) => {
    const { client: a } = await chatClient(server.ws("/since"));
    const sent = await sayAll(a, texts("m", 5));
    const { client: b, welcome } = await chatClient(server.ws(`/since?since=${sent[1]!.id}`));
    assert.equal(welcome.recovered, true);
    assert.equal(welcome.after, 2);
    assert.deepEqual(welcome.history, sent.slice(2));

    const { client: c, welcome: unknown } = await chatClient(server.ws("/since?since=nope-1"));
    assert.equal(unknown.recovered, false);
    assert.equal(unknown.after, 0);
    assert.deepEqual(unknown.history, sent);
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

Deno.test("malformed resume parameters are refused with 400 invalid_resume before the upgrade", async () => {
  await withServer({}, async (server) => {
    const chat = { "Sec-WebSocket-Protocol": "chorus.v1" };
    const bad = [
      "offset=abc&epoch=x",
      "offset=3",
      "epoch=x",
      `offset=3&epoch=${"e".repeat(65)}`,
      "offset=3&epoch=",
      "offset=-1&epoch=x",
      "offset=1.5&epoch=x",
      "offset=&epoch=x",
    ];
    for (const query of bad) {
      const res = await upgradeOverTcp(server.port, `/r?${query}`, chat);
      assert.equal(res.status, 400, `${query}: ${res.head}`);
      assert.equal(JSON.parse(res.body).error.code, "invalid_resume", query);
    }
    const raw = await upgradeOverTcp(server.port, "/r?offset=abc&epoch=x");
    assert.equal(raw.status, 400, "raw clients too");
    assert.equal(JSON.parse(raw.body).error.code, "invalid_resume");
    const longest = await upgradeOverTcp(server.port, `/r?offset=3&epoch=${"e".repeat(64)}`, chat);
    assert.equal(longest.status, 101, "an epoch of 64 characters is well-formed");
    await waitFor(() => server.hub.connections === 0, "the hand-made upgrade gone");
  });
});

// ---------------------------------------------------------------------------------------------
// Long gaps

for (const kib of [64, 16]) {
  Deno.test(`a gap of 5,000 messages is delivered whole and in order, paced, without a slow-consumer close at --max-buffered-bytes ${kib} KiB`, async () => {
    await withServer(
      { history: 10, maxBufferedBytes: kib * 1024, apiKey: KEY },
      async (server) => {
        const { client: first, welcome } = await chatClient(server.ws("/gap"));
        await first.close();
        const sent = await publishMany(server, "/gap", 5000, (i) => `m${i}-`.padEnd(200, "x"));
        assert.deepEqual([...sent.keys()], offsetRange(0, 5000));

        const { client: back, welcome: w } = await resume(server, "/gap", 0, welcome.epoch);
        assert.equal(w.recovered, true);
        assert.equal(w.after, 0);
        assert.equal(w.offset, 5000);
        assert.equal(w.history.length, 10);
        // About 1.4 MB of events: many times what the socket may queue, so it must be paced.
        const rest = await messagesWhileOpen(back, 4990);
        const all = [...w.history, ...rest];
        assert.deepEqual(offsetsOf(all), offsetRange(0, 5000), "every offset once, in order");
        for (const m of all) assert.equal(m.text, sent.get(m.offset), `text of ${m.offset}`);

        const [next] = await publishMany(server, "/gap", 1, () => "after the gap", 5000);
        const [live] = await messagesWhileOpen(back, 1);
        assert.deepEqual([live!.offset, live!.text], [next![0], "after the gap"]);
        assert.equal(back.socket.readyState, WebSocket.OPEN, "still connected");
        await back.close();
      },
    );
  });
}

/**
 * Publish `n` texts into `room` through the API, a few requests at a time; returns each
 * text by the offset the API answered.
 */
async function publishMany(
  server: TestServer,
  room: string,
  n: number,
  text: (i: number) => string,
  start = 0,
): Promise<Map<number, string>> {
  const byOffset = new Map<number, string>();
  let i = start;
  const worker = async () => {
    while (i < start + n) {
      const body = text(i++);
      const res = await fetch(`${server.origin}/api/publish?room=${room}`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" },
        body,
      });
      assert.equal(res.status, 200);
      const { offset } = await res.json();
      assert.equal(typeof offset, "number");
      byOffset.set(offset, body);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return new Map([...byOffset].sort(([a], [b]) => a - b));
}

// ---------------------------------------------------------------------------------------------
// The history API

/** `GET /api/rooms/history?QUERY` with the key: status and parsed body. */
async function history(
  server: TestServer,
  query: string,
): Promise<{ status: number; body: Event }> {
  const res = await fetch(`${server.origin}/api/rooms/history?${query}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("publish answers each message's epoch and offset, in order", async () => {
  await withServer({ apiKey: KEY }, async (server) => {
    const { client, welcome } = await chatClient(server.ws("/pub"));
    for (let i = 1; i <= 3; i++) {
      const res = await fetch(`${server.origin}/api/publish?room=/pub`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" },
        body: `p${i}`,
      });
      assert.deepEqual(await res.json(), { delivered: 1, epoch: welcome.epoch, offset: i });
      const m = await client.until("message");
      assert.deepEqual([m.offset, m.text], [i, `p${i}`]);
    }
    await client.close();
  });
});

Deno.test("the history API pages every kept message exactly once, forwards and backwards", async () => {
  await withServer({ apiKey: KEY, retainMessages: 200 }, async (server) => {
    const sent = await publishMany(server, "/h", 250, (i) => `h${i}`); // keeps 51..250
    assert.deepEqual([...sent.keys()], offsetRange(0, 250));

    const forwards: Event[] = [];
    const nexts: (number | null)[] = [];
    let cursor: number | null = 0;
    while (cursor !== null) {
      const { status, body } = await history(server, `room=/h&after=${cursor}&limit=100`);
      assert.equal(status, 200);
      assert.equal(body.room, "/h");
      assert.equal(body.offset, 250);
      forwards.push(...body.messages);
      nexts.push(cursor = body.next);
      assert.ok(nexts.length <= 10, "paging ends");
    }
    assert.deepEqual(offsetsOf(forwards), offsetRange(50, 250), "oldest first, each kept one once");
    for (const m of forwards) assert.equal(m.text, sent.get(m.offset));
    assert.deepEqual(nexts, [150, null]);

    const backwards: Event[] = [];
    cursor = 251;
    nexts.length = 0;
    while (cursor !== null) {
      const { status, body } = await history(server, `room=/h&before=${cursor}&limit=100`);
      assert.equal(status, 200);
      backwards.push(...body.messages);
      nexts.push(cursor = body.next);
      assert.ok(nexts.length <= 10, "paging ends");
    }
    assert.deepEqual(
      offsetsOf(backwards),
      offsetRange(50, 250).reverse(),
      "newest first, each once",
    );
    assert.deepEqual(nexts, [151, null]);

    const { body: start } = await history(server, "room=/h&limit=3");
    assert.deepEqual(offsetsOf(start.messages), [51, 52, 53], "no cursor pages from the start");
    assert.equal(start.next, 53);
  });
});

Deno.test("the history API answers 400 with a code for a bad room, cursor or limit", async () => {
  await withServer({ apiKey: KEY }, async (server) => {
    const cases: [string, string][] = [
      ["after=0", "bad_request"],
      ["room=lobby", "invalid_room"],
      ["room=/a/../b", "invalid_room"],
      ["room=/h&after=-1", "bad_request"],
      ["room=/h&after=x", "bad_request"],
      ["room=/h&before=1.5", "bad_request"],
      ["room=/h&after=1&before=5", "bad_request"],
      ["room=/h&limit=0", "bad_request"],
      ["room=/h&limit=1001", "bad_request"],
      ["room=/h&limit=ten", "bad_request"],
    ];
    for (const [query, code] of cases) {
      const { status, body } = await history(server, query);
      assert.equal(status, 400, query);
      assert.equal(body.error.code, code, query);
    }
    const { status, body } = await history(server, "room=/h&limit=1000");
    assert.equal(status, 200, "the largest limit is allowed");
    assert.deepEqual(body.messages, []);
    assert.equal(body.next, null);
    const unauthorized = await fetch(`${server.origin}/api/rooms/history?room=/h`);
    assert.equal(unauthorized.status, 401);
    await unauthorized.body?.cancel();
  });
});

Deno.test("a member catching up keeps its room when everyone else leaves meanwhile", async () => {
  await withServer({ history: 10, maxBufferedBytes: 16 * 1024, apiKey: KEY }, async (server) => {
    const { client: first, welcome } = await chatClient(server.ws("/stay"));
    await first.close();
    await publishMany(server, "/stay", 2000, (i) => `m${i}-`.padEnd(200, "x"));
    const keeper = await rawClient(server.ws("/stay"));
    const { client: back, welcome: w } = await resume(server, "/stay", 0, welcome.epoch);
    // About 460 KB paced in 8 KiB chunks: the keeper leaves long before the gap is written.
    await keeper.close();
    await waitFor(() => server.hub.connections === 1, "the keeper to be gone");
    const rest = await messagesWhileOpen(back, 2000 - w.history.length);
    assert.equal(rest.at(-1)!.offset, 2000);
    await publishMany(server, "/stay", 1, () => "after the gap", 2000);
    const [live] = await messagesWhileOpen(back, 1);
    assert.equal(live!.text, "after the gap", "the member joined its room's fan-out");
    await back.close();
  });
});
