/**
 * The `chorus.v1` protocol over real sockets: subprotocol negotiation, welcome, names,
 * messages, presence, every error code, raw/chat rooms as one conversation, history with
 * its TTL, recovery with `since`, coalesced frames, and a 100-client fan-out.
 */
import assert from "node:assert/strict";
import {
  checkName,
  MAX_TEXT_LENGTH,
  negotiateMode,
  parseClientEvent,
  SUBPROTOCOL,
} from "../src/protocol.ts";
import {
  ChatClient,
  chatClient,
  Client,
  type Event,
  rawClient,
  startServer,
  type TestServer,
  upgradeOverTcp,
  waitFor,
} from "./helpers.ts";

/** Send `text` from `from` and wait until every listed chat client has received it. */
async function sayAndSee(from: ChatClient, text: string, ...all: ChatClient[]): Promise<Event> {
  from.say(text);
  let event: Event | undefined;
  for (const c of all) {
    event = await c.next("message");
    assert.equal(event.text, text);
  }
  return event!;
}

/** Close clients and wait until the server has let go of every connection. */
async function closeAll(server: TestServer, ...clients: Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.close()));
  await waitFor(() => server.hub.connections === 0, "every connection gone");
}

// ---------------------------------------------------------------------------------------------
// Pure validation

Deno.test("negotiateMode: chorus.v1 anywhere in the offer is chat, no offer is raw, else refused", () => {
  assert.equal(negotiateMode(null), "raw");
  assert.equal(negotiateMode(""), "raw");
  assert.equal(negotiateMode("  "), "raw");
  assert.equal(negotiateMode("chorus.v1"), "chat");
  assert.equal(negotiateMode("foo, chorus.v1"), "chat");
  assert.equal(negotiateMode(" chorus.v1 ,bar"), "chat");
  assert.equal(negotiateMode("foo"), null);
  assert.equal(negotiateMode("chorus.v2, chorus.v1x"), null);
});

Deno.test("checkName trims, and refuses empty, over-32 and control-character names", () => {
  assert.deepEqual(checkName("  Ada  "), { ok: true, name: "Ada" });
  assert.deepEqual(checkName("x".repeat(32)), { ok: true, name: "x".repeat(32) });
  assert.deepEqual(checkName(` ${"x".repeat(32)} `), { ok: true, name: "x".repeat(32) });
  assert.deepEqual(checkName("Zoë 🎉"), { ok: true, name: "Zoë 🎉" });
  for (const bad of ["", "   ", "x".repeat(33), "a\u0007b", "a\nb", "a\u007fb", "a\u0085b"]) {
    assert.equal(checkName(bad).ok, false, JSON.stringify(bad));
  }
  assert.equal(checkName("a\u2028b").ok, false);
});

Deno.test("parseClientEvent returns typed events or the documented error code", () => {
  assert.deepEqual(parseClientEvent('{"type":"message","text":"hi","extra":1}'), {
    type: "message",
    text: "hi",
  });
  assert.deepEqual(parseClientEvent('{"type":"rename","name":" Ada "}'), {
    type: "rename",
    name: "Ada",
  });
  const x = "x".repeat(MAX_TEXT_LENGTH);
  assert.deepEqual(parseClientEvent(JSON.stringify({ type: "message", text: x })), {
    type: "message",
    text: x,
  });
  const cases: [string, string][] = [
    ["{", "invalid_json"],
    ["[1,2]", "invalid_json"],
    ["42", "invalid_json"],
    ["null", "invalid_json"],
    ['"message"', "invalid_json"],
    ["{}", "invalid_field"],
    ['{"type":5}', "invalid_field"],
    ['{"type":"message"}', "invalid_field"],
    ['{"type":"message","text":5}', "invalid_field"],
    ['{"type":"rename"}', "invalid_field"],
    ['{"type":"rename","name":null}', "invalid_field"],
    ['{"type":"dance"}', "unknown_type"],
    [JSON.stringify({ type: "message", text: x + "x" }), "text_too_long"],
    ['{"type":"rename","name":"  "}', "invalid_name"],
    [JSON.stringify({ type: "rename", name: "n".repeat(33) }), "invalid_name"],
    ['{"type":"rename","name":"a\\u0007b"}', "invalid_name"],
  ];
  for (const [frame, code] of cases) {
    const result = parseClientEvent(frame);
    assert.equal(result.type, "error", frame);
    assert.equal((result as { code: string }).code, code, frame);
  }
});

// ---------------------------------------------------------------------------------------------
// Subprotocol negotiation

Deno.test("offering chorus.v1 gets it echoed and a welcome; offering nothing gets raw mode", async () => {
  const server = await startServer();
  try {
    const chat = new ChatClient(server.ws("/neg"));
    await chat.opened;
    assert.equal(chat.socket.protocol, SUBPROTOCOL);
    assert.equal((await chat.next()).type, "welcome");

    const both = new Client(server.ws("/neg"), ["foo", SUBPROTOCOL]);
    await both.opened;
    assert.equal(both.socket.protocol, SUBPROTOCOL);
    assert.equal(JSON.parse(await both.text()).type, "welcome");

    const raw = await rawClient(server.ws("/neg"));
    assert.equal(raw.socket.protocol, "");
    await waitFor(() => server.hub.connections === 3, "3 connections");
    raw.send("plain");
    assert.equal(await raw.text(), "plain", "raw clients get frames verbatim, no welcome");
  } finally {
    await server.close();
  }
});

Deno.test("offering only unknown subprotocols is refused with 400 before the upgrade", async () => {
  const server = await startServer();
  try {
    const res = await upgradeOverTcp(server.port, "/room", { "Sec-WebSocket-Protocol": "foo" });
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.body).error.code, "unsupported_protocol");
    const ok = await upgradeOverTcp(server.port, "/room", {
      "Sec-WebSocket-Protocol": "foo, chorus.v1",
    });
    assert.equal(ok.status, 101);
    assert.match(ok.head, /^sec-websocket-protocol: chorus\.v1$/im);

    const refused = new Client(server.ws("/room"), ["foo", "chorus.v2"]);
    await assert.rejects(refused.opened);
    await refused.closed;
    assert.equal(refused.socket.readyState, WebSocket.CLOSED);
    await waitFor(() => server.hub.connections === 0, "no connection kept");
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Welcome and names

Deno.test("welcome is the first event: own id and name, room = path, members, history, recovered", async () => {
  const server = await startServer();
  try {
    const { client: a, welcome: wa } = await chatClient(server.ws("/lobby/sub?name=Ada"));
    assert.equal(wa.type, "welcome");
    assert.equal(wa.name, "Ada");
    assert.equal(typeof wa.id, "string");
    assert.equal(wa.room, "/lobby/sub");
    assert.deepEqual(wa.members, [{ id: wa.id, name: "Ada" }]);
    assert.deepEqual(wa.history, []);
    assert.equal(wa.recovered, true);
    const first = await sayAndSee(a, "first", a);
    await sayAndSee(a, "second", a);

    const { welcome: wb } = await chatClient(server.ws("/lobby/sub?name=Lin"));
    assert.notEqual(wb.id, wa.id);
    assert.deepEqual(wb.members, [{ id: wa.id, name: "Ada" }, { id: wb.id, name: "Lin" }]);
    assert.deepEqual(wb.history.map((m: Event) => m.text), ["first", "second"]);
    assert.deepEqual(wb.history[0], first);
    assert.equal(wb.recovered, true);
  } finally {
    await server.close();
  }
});

Deno.test("the name comes from ?name= trimmed, or is a generated guest-XXXX", async () => {
  const server = await startServer();
  try {
    const { welcome: named } = await chatClient(server.ws("/n?name=%20%20Ada%20Lovelace%20"));
    assert.equal(named.name, "Ada Lovelace");
    const { welcome: max } = await chatClient(server.ws(`/n?name=${"m".repeat(32)}`));
    assert.equal(max.name, "m".repeat(32));
    const { welcome: g1 } = await chatClient(server.ws("/n"));
    const { welcome: g2 } = await chatClient(server.ws("/n"));
    assert.match(g1.name, /^guest-[0-9a-z]{4}$/, `generated name ${g1.name}`);
    assert.match(g2.name, /^guest-[0-9a-z]{4}$/, `generated name ${g2.name}`);
    assert.notEqual(g1.name, g2.name);
  } finally {
    await server.close();
  }
});

Deno.test("an invalid ?name= is refused with 400 invalid_name, in both modes", async () => {
  const server = await startServer();
  try {
    const bad = ["", "%20%20%20", "x".repeat(33), "%07", "a%07b", "a%0Ab", "a%7Fb", "a%E2%80%A8b"];
    for (const name of bad) {
      for (
        const protocol of [{ "Sec-WebSocket-Protocol": SUBPROTOCOL }, {}] as Record<
          string,
          string
        >[]
      ) {
        const res = await upgradeOverTcp(server.port, `/n?name=${name}`, protocol);
        assert.equal(res.status, 400, `name=${name}`);
        assert.equal(JSON.parse(res.body).error.code, "invalid_name", `name=${name}`);
      }
    }
    const refused = new ChatClient(server.ws("/n?name=a%0Ab"));
    await assert.rejects(refused.opened);
    await refused.closed;
    assert.equal(server.hub.connections, 0);
  } finally {
    await server.close();
  }
});

Deno.test("two members may share a name; their ids differ", async () => {
  const server = await startServer();
  try {
    const { client: a, welcome: wa } = await chatClient(server.ws("/twins?name=Sam"));
    const { client: b, welcome: wb } = await chatClient(server.ws("/twins?name=Sam"));
    assert.equal(wb.name, "Sam");
    assert.notEqual(wa.id, wb.id);
    assert.deepEqual(wb.members, [{ id: wa.id, name: "Sam" }, { id: wb.id, name: "Sam" }]);
    assert.deepEqual(await a.next("join"), { type: "join", id: wb.id, name: "Sam" });
    const m = await sayAndSee(b, "which Sam?", a, b);
    assert.deepEqual(m.from, { id: wb.id, name: "Sam" });
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Messages and presence

Deno.test("a message reaches everyone in the room, sender included, with id, from, text and ts", async () => {
  const server = await startServer();
  try {
    const { client: a, welcome: wa } = await chatClient(server.ws("/m?name=Ada"));
    const { client: b } = await chatClient(server.ws("/m?name=Lin"));
    const { client: other } = await chatClient(server.ws("/elsewhere"));
    await a.next("join");
    const ids = new Set<string>();
    for (const text of ["one", "two", "ünïcødé ✓ 🎉", ""]) {
      a.say(text);
      const [ea, eb] = [await a.next("message"), await b.next("message")];
      assert.deepEqual(ea, eb);
      assert.deepEqual(Object.keys(ea).sort(), ["from", "id", "offset", "text", "ts", "type"]);
      assert.deepEqual(ea.from, { id: wa.id, name: "Ada" });
      assert.equal(ea.text, text);
      assert.equal(typeof ea.ts, "number");
      assert.ok(Math.abs(ea.ts - Date.now()) < 5000, `ts ${ea.ts} is server time`);
      assert.ok(!ids.has(ea.id) && ea.id !== wa.id, "message ids are unique");
      ids.add(ea.id);
    }
    // The other room heard nothing: its next event is its own marker.
    await sayAndSee(other, "marker", other);
  } finally {
    await server.close();
  }
});

Deno.test("join and leave go to the others, never to the joiner itself", async () => {
  const server = await startServer();
  try {
    const { client: a } = await chatClient(server.ws("/p?name=Ada"));
    const { client: b, welcome: wb } = await chatClient(server.ws("/p?name=Lin"));
    assert.deepEqual(await a.next("join"), { type: "join", id: wb.id, name: "Lin" });
    // b's first event after welcome is its own message: no join about itself.
    await sayAndSee(b, "hello", b, a);
    await b.close();
    assert.deepEqual(await a.next("leave"), { type: "leave", id: wb.id, name: "Lin" });
  } finally {
    await server.close();
  }
});

Deno.test("rename reaches everyone, the renamer included, with oldName and a trimmed name", async () => {
  const server = await startServer();
  try {
    const { client: a, welcome: wa } = await chatClient(server.ws("/r?name=Ada"));
    const { client: b } = await chatClient(server.ws("/r?name=Lin"));
    await a.next("join");
    a.sendEvent({ type: "rename", name: "  Ada L.  " });
    const expected = { type: "rename", id: wa.id, name: "Ada L.", oldName: "Ada" };
    assert.deepEqual(await a.next("rename"), expected);
    assert.deepEqual(await b.next("rename"), expected);
    const m = await sayAndSee(a, "new name", a, b);
    assert.deepEqual(m.from, { id: wa.id, name: "Ada L." });
    const { welcome: wc } = await chatClient(server.ws("/r"));
    assert.deepEqual(wc.members[0], { id: wa.id, name: "Ada L." });
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Errors

Deno.test("every error code is sent to the offender only, and its connection stays usable", async () => {
  const server = await startServer();
  try {
    const { client: a } = await chatClient(server.ws("/e?name=Ada"));
    const { client: b } = await chatClient(server.ws("/e?name=Lin"));
    await a.next("join");
    const bad: [string | Uint8Array<ArrayBuffer>, string][] = [
      ["{not json", "invalid_json"],
      ["[1,2,3]", "invalid_json"],
      ["42", "invalid_json"],
      [new Uint8Array([1, 2, 3]), "invalid_json"],
      ['{"type":"dance"}', "unknown_type"],
      ['{"text":"no type"}', "invalid_field"],
      ['{"type":"message"}', "invalid_field"],
      ['{"type":"message","text":42}', "invalid_field"],
      ['{"type":"rename"}', "invalid_field"],
      ['{"type":"rename","name":7}', "invalid_field"],
      [JSON.stringify({ type: "message", text: "x".repeat(MAX_TEXT_LENGTH + 1) }), "text_too_long"],
      ['{"type":"rename","name":""}', "invalid_name"],
      ['{"type":"rename","name":"   "}', "invalid_name"],
      [JSON.stringify({ type: "rename", name: "n".repeat(33) }), "invalid_name"],
      [JSON.stringify({ type: "rename", name: "bell\u0007" }), "invalid_name"],
      [JSON.stringify({ type: "rename", name: "two\nlines" }), "invalid_name"],
    ];
    for (const [i, [frame, code]] of bad.entries()) {
      a.send(frame);
      const err = await a.next("error");
      assert.equal(err.code, code, `frame ${i}`);
      assert.equal(typeof err.message, "string");
      assert.equal(a.socket.readyState, WebSocket.OPEN);
      // Same client still works, and b's next event is that message: b saw no error.
      await sayAndSee(a, `ok ${i}`, a, b);
    }
    const longest = "y".repeat(MAX_TEXT_LENGTH);
    await sayAndSee(a, longest, a, b);
    // Nothing came late either: b's next event is a final marker.
    await sayAndSee(a, "end", a, b);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Raw and chat clients in one room

Deno.test("raw and chat clients are one conversation; binary frames stay among raw clients", async () => {
  const server = await startServer();
  try {
    const rawA = await rawClient(server.ws("/mix?name=Rawa"));
    await waitFor(() => server.hub.connections === 1, "raw client joined");
    const { client: chat, welcome } = await chatClient(server.ws("/mix?name=Cat"));
    assert.equal(welcome.members.length, 2);
    assert.equal(welcome.members[0].name, "Rawa");
    const rawAId = welcome.members[0].id;
    assert.deepEqual(welcome.members[1], { id: welcome.id, name: "Cat" });

    const rawB = await rawClient(server.ws("/mix?name=Rawb"));
    const joinB = await chat.next("join");
    assert.equal(joinB.name, "Rawb");

    rawA.send("from raw");
    const m = await chat.next("message");
    assert.deepEqual(m.from, { id: rawAId, name: "Rawa" });
    assert.equal(m.text, "from raw");
    assert.equal(await rawA.text(), "from raw");
    assert.equal(await rawB.text(), "from raw");

    chat.say("from chat");
    assert.equal((await chat.next("message")).text, "from chat");
    assert.equal(await rawA.text(), "from chat");
    assert.equal(await rawB.text(), "from chat");

    const bytes = new Uint8Array([0, 1, 2, 255]);
    rawA.send(bytes);
    const bin = await rawB.frames.next("binary");
    assert.ok(bin instanceof ArrayBuffer);
    assert.deepEqual(new Uint8Array(bin), bytes);
    rawA.send("marker");
    assert.equal(await rawB.text(), "marker");
    const next = await chat.next("message");
    assert.equal(next.text, "marker", "the chat client got nothing for the binary frame");

    await rawB.close();
    assert.deepEqual(await chat.next("leave"), { type: "leave", id: joinB.id, name: "Rawb" });
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// History and recovery

Deno.test("history keeps only the last --history messages, oldest first; 0 disables it", async () => {
  const server = await startServer({ history: 3 });
  const none = await startServer({ history: 0 });
  try {
    const { client: a } = await chatClient(server.ws("/h"));
    for (let i = 0; i < 5; i++) await sayAndSee(a, `m${i}`, a);
    const { welcome } = await chatClient(server.ws("/h"));
    assert.deepEqual(welcome.history.map((m: Event) => m.text), ["m2", "m3", "m4"]);

    const { client: z } = await chatClient(none.ws("/h"));
    for (let i = 0; i < 3; i++) await sayAndSee(z, `z${i}`, z);
    const { welcome: w0 } = await chatClient(none.ws("/h"));
    assert.deepEqual(w0.history, []);
  } finally {
    await Promise.all([server.close(), none.close()]);
  }
});

Deno.test("raw clients' text frames enter history", async () => {
  const server = await startServer();
  try {
    const raw = await rawClient(server.ws("/rh?name=Rawa"));
    await waitFor(() => server.hub.connections === 1, "raw client joined");
    raw.send("raw hello");
    assert.equal(await raw.text(), "raw hello");
    raw.send(new Uint8Array([1, 2]));
    await raw.frames.next("binary echo");
    const { welcome } = await chatClient(server.ws("/rh"));
    assert.equal(welcome.history.length, 1, "binary frames are not history");
    assert.equal(welcome.history[0].text, "raw hello");
    assert.deepEqual(welcome.history[0].from, welcome.members[0]);
  } finally {
    await server.close();
  }
});

Deno.test("history survives the room emptying, with its offsets and epoch", async () => {
  const clock = Date.now() - 5000;
  const server = await startServer({}, { now: () => clock });
  try {
    const { client: a, welcome: w0 } = await chatClient(server.ws("/kept"));
    assert.equal(w0.offset, 0, "an empty stream is at offset 0");
    assert.equal(typeof w0.epoch, "string");
    const m0 = await sayAndSee(a, "before", a);
    assert.equal(m0.ts, clock, "ts comes from the hub's clock");
    assert.equal(m0.offset, 1);
    await closeAll(server, a);
    assert.equal(server.hub.rooms, 0);

    const { client: b, welcome: w1 } = await chatClient(server.ws("/kept"));
    assert.deepEqual(w1.history.map((m: Event) => [m.offset, m.text]), [[1, "before"]]);
    assert.equal(w1.epoch, w0.epoch, "the same stream");
    assert.equal(w1.offset, 1);
    assert.equal(w1.after, 0);
    await closeAll(server, b);
  } finally {
    await server.close();
  }
});

Deno.test("?since= recovers only the messages after that id; unknown or evicted ids get all", async () => {
  const server = await startServer({ history: 5 });
  try {
    const { client: a } = await chatClient(server.ws("/s"));
    const sent: Event[] = [];
    for (let i = 0; i < 5; i++) sent.push(await sayAndSee(a, `m${i}`, a));
    const texts = (w: Event) => w.history.map((m: Event) => m.text);

    const { welcome: mid } = await chatClient(server.ws(`/s?since=${sent[1]!.id}`));
    assert.deepEqual(texts(mid), ["m2", "m3", "m4"]);
    assert.deepEqual(mid.history, sent.slice(2));
    assert.equal(mid.recovered, true);

    const { welcome: last } = await chatClient(server.ws(`/s?since=${sent[4]!.id}`));
    assert.deepEqual(last.history, []);
    assert.equal(last.recovered, true);

    const { welcome: unknown } = await chatClient(server.ws("/s?since=no-such-id"));
    assert.deepEqual(texts(unknown), ["m0", "m1", "m2", "m3", "m4"]);
    assert.equal(unknown.recovered, false);

    a.say("m5"); // evicts m0
    assert.equal((await a.until("message")).text, "m5"); // past the joins of the clients above
    const { welcome: evicted } = await chatClient(server.ws(`/s?since=${sent[0]!.id}`));
    assert.deepEqual(texts(evicted), ["m1", "m2", "m3", "m4", "m5"]);
    assert.equal(evicted.recovered, false);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Coalescing and load

Deno.test("events ready in the same turn arrive as one frame of newline-separated events", async () => {
  const server = await startServer();
  try {
    const { client: chat } = await chatClient(server.ws("/co"));
    // A plain client offering chorus.v1, to see the frames exactly as sent.
    const wire = new Client(server.ws("/co"), SUBPROTOCOL);
    await wire.opened;
    assert.equal(JSON.parse(await wire.text()).type, "welcome");
    await chat.next("join");
    const raw = await rawClient(server.ws("/co"));
    await chat.next("join");
    assert.equal(JSON.parse(await wire.text()).type, "join");

    // A speaker that is not a socket: the publish path needs only its id and name.
    const bot = { id: "bot", name: "Bot" };
    const framesBefore = chat.frameCount;
    for (let i = 0; i < 5; i++) server.hub.publish("/co", `burst ${i}`, bot); // one synchronous turn

    const frame = await wire.text();
    const lines = frame.split("\n");
    assert.equal(lines.length, 5, "five events in one frame");
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).text),
      [0, 1, 2, 3, 4].map((i) => `burst ${i}`),
    );
    for (let i = 0; i < 5; i++) {
      const e = await chat.next("message");
      assert.equal(e.text, `burst ${i}`);
      assert.deepEqual(e.from, { id: "bot", name: "Bot" });
    }
    assert.equal(chat.frameCount, framesBefore + 1, "ChatClient split one frame into five");
    // Raw clients are never coalesced: one frame per message.
    for (let i = 0; i < 5; i++) assert.equal(await raw.text(), `burst ${i}`);
  } finally {
    await server.close();
  }
});

Deno.test("100 chat clients sending 5 messages each: all 500 arrive everywhere, in order, once", async () => {
  const server = await startServer();
  try {
    const n = 100;
    const perSender = 5;
    const total = n * perSender;
    const joined = await Promise.all(
      Array.from({ length: n }, (_, i) => chatClient(server.ws(`/crowd?name=c${i}`))),
    );
    await waitFor(() => server.hub.connections === n, `${n} connections`);
    const ids = joined.map((j) => j.welcome.id as string);
    joined.forEach(({ client }, i) => {
      for (let k = 0; k < perSender; k++) client.say(`${i}:${k}`);
    });
    await Promise.all(joined.map(async ({ client }) => {
      const next = new Array(n).fill(0);
      const seen = new Set<string>();
      let events = 1; // the welcome
      while (seen.size < total) {
        const e = await client.events.next("a message");
        events++;
        if (e.type === "join") continue;
        assert.equal(e.type, "message");
        assert.ok(!seen.has(e.id), `duplicate ${e.id}`);
        seen.add(e.id);
        const [from, seq] = e.text.split(":").map(Number);
        assert.equal(e.from.id, ids[from]);
        assert.equal(seq, next[from], `sender ${from} in order`);
        next[from]++;
      }
      assert.ok(next.every((v) => v === perSender), "every message arrived");
      assert.ok(client.frameCount <= events, `${client.frameCount} frames for ${events} events`);
    }));
  } finally {
    await server.close();
  }
});
