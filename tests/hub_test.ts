import assert from "node:assert/strict";
// @ts-types="@types/ws"
import WebSocketNode from "ws";
import {
  chatClient,
  type Event,
  exchangeInOrder,
  Inbox,
  rawClient,
  startServer,
  waitFor,
} from "./helpers.ts";
import { Hub } from "../src/hub.ts";
import { protocolError } from "../src/protocol.ts";
import { CONNECTING, joinStub, OPEN, StubPeer } from "./stub_peer.ts";

Deno.test("a raw broadcast reaches every socket in the room, sender included, and no other room", async () => {
  const server = await startServer();
  try {
    const a = await rawClient(server.ws("/lobby"));
    const b = await rawClient(server.ws("/lobby"));
    const other = await rawClient(server.ws("/other"));
    const root = await rawClient(server.ws("/"));
    await waitFor(() => server.hub.connections === 4, "4 connections");
    a.send("hello lobby");
    assert.equal(await a.text(), "hello lobby");
    assert.equal(await b.text(), "hello lobby");
    root.send("hello root");
    assert.equal(await root.text(), "hello root");
    other.send("marker");
    assert.equal(await other.text(), "marker", "/other heard nothing before its own marker");
    // An end marker in /lobby: a leaked "hello root" would arrive before it.
    a.send("end");
    assert.equal(await a.text(), "end");
    assert.equal(await b.text(), "end");
    assert.equal(server.hub.rooms, 3);
  } finally {
    await server.close();
  }
});

Deno.test("text stays text and binary stays binary, byte for byte", async () => {
  const server = await startServer();
  try {
    const a = await rawClient(server.ws("/r"));
    const b = await rawClient(server.ws("/r"));
    await waitFor(() => server.hub.connections === 2, "2 connections");
    const bytes = new Uint8Array([0, 1, 2, 0xff, 0xfe, 10, 13]);
    a.send(bytes);
    a.send("ünïcødé ✓ 🎉");
    const bin = await b.frames.next("binary");
    assert.ok(bin instanceof ArrayBuffer, "binary frame arrives as binary");
    assert.deepEqual(new Uint8Array(bin), bytes);
    assert.equal(await b.text(), "ünïcødé ✓ 🎉");
  } finally {
    await server.close();
  }
});

Deno.test("a closed socket is removed and its empty room is dropped", async () => {
  const server = await startServer();
  try {
    const a = await rawClient(server.ws("/r"));
    const b = await rawClient(server.ws("/r"));
    const gone = await rawClient(server.ws("/r"));
    const alone = await rawClient(server.ws("/alone"));
    await waitFor(() => server.hub.connections === 4, "4 connections");
    assert.equal(server.hub.rooms, 2);
    await gone.close();
    await alone.close();
    await waitFor(() => server.hub.connections === 2, "closed sockets removed");
    assert.equal(server.hub.rooms, 1, "the empty room is dropped");
    assert.equal(server.hub.membersOf("/r").length, 2, "the closed socket left its room");
    a.send("after close");
    assert.equal(await b.text(), "after close");
    assert.equal(await a.text(), "after close");
  } finally {
    await server.close();
  }
});

Deno.test("a socket that vanishes without a close handshake does not break the broadcast", async () => {
  const server = await startServer();
  try {
    const a = await rawClient(server.ws("/r"));
    const b = await rawClient(server.ws("/r"));
    // A raw TCP client that upgrades, then resets the connection without a close frame.
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await tcp.write(new TextEncoder().encode(
      "GET /r HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    const buf = new Uint8Array(1024);
    const n = await tcp.read(buf);
    assert.match(new TextDecoder().decode(buf.subarray(0, n!)), /^HTTP\/1.1 101/);
    await waitFor(() => server.hub.connections === 3, "3 connections");
    tcp.close();
    for (let i = 0; i < 20; i++) a.send(`m${i}`);
    for (let i = 0; i < 20; i++) assert.equal(await b.text(), `m${i}`);
    await waitFor(() => server.hub.connections === 2, "vanished socket removed");
  } finally {
    await server.close();
  }
});

Deno.test("200 clients exchanging messages lose none and keep per-sender order", async () => {
  const server = await startServer();
  try {
    const n = 200;
    const perSender = 5;
    const clients = await Promise.all(
      Array.from({ length: n }, () => rawClient(server.ws("/crowd"))),
    );
    await waitFor(() => server.hub.connections === n, `${n} connections`);
    await exchangeInOrder(clients, perSender);
  } finally {
    await server.close();
  }
});

Deno.test("a Node ws client and a Deno client talk to each other in raw mode", async () => {
  const server = await startServer();
  try {
    const deno = await rawClient(server.ws("/"));
    const node = new WebSocketNode(server.ws("/"));
    const inbox = new Inbox<{ data: string; binary: boolean }>();
    node.on("message", (data, isBinary) => inbox.push({ data: data.toString(), binary: isBinary }));
    await new Promise((resolve, reject) => {
      node.once("open", resolve);
      node.once("error", reject);
    });
    await waitFor(() => server.hub.connections === 2, "2 connections");
    node.send("from node");
    assert.equal(await deno.text(), "from node");
    assert.deepEqual(await inbox.next(), { data: "from node", binary: false });
    deno.send("from deno");
    assert.deepEqual(await inbox.next(), { data: "from deno", binary: false });
    node.send(new Uint8Array([1, 2, 3]));
    assert.deepEqual(await inbox.next(), { data: "\x01\x02\x03", binary: true });
    const closed = new Promise((resolve) => node.once("close", resolve));
    node.close();
    await closed;
  } finally {
    await server.close();
  }
});

Deno.test("--history-max-bytes trims the memory store's least recently written rooms first", async () => {
  // Each 1,000-character message costs about 2 KiB of the budget (see sizeOf in memory_store.ts).
  const server = startServer({ historyMaxBytes: 12_000 });
  try {
    const cold = await rawClient(server.ws("/cold"));
    const hot = await rawClient(server.ws("/hot"));
    await waitFor(() => server.hub.connections === 2, "2 connections");
    for (let i = 0; i < 3; i++) {
      cold.send(`c${i}`.padEnd(1000, "."));
      await cold.text();
    }
    for (let i = 0; i < 3; i++) {
      hot.send(`h${i}`.padEnd(1000, "."));
      await hot.text();
    }
    // Empty rooms: a newcomer's welcome then comes from the store, not the hub's recent copy.
    await cold.close();
    await hot.close();
    await waitFor(() => server.hub.connections === 0, "both gone");
    const { client: late, welcome } = await chatClient(server.ws("/cold"));
    const { client: hotLate, welcome: hotWelcome } = await chatClient(server.ws("/hot"));
    const texts = (w: Event) => w.history.map((m: Event) => m.text.slice(0, 2));
    assert.deepEqual(texts(hotWelcome), ["h0", "h1", "h2"], "the recently used room keeps all");
    assert.ok(texts(welcome).length < 3, "the cold room lost its oldest first");
    assert.deepEqual(texts(welcome), ["c0", "c1", "c2"].slice(3 - texts(welcome).length));
    await late.close();
    await hotLate.close();
  } finally {
    await server.close();
  }
});

// The hub's own bookkeeping, over stub peers: what no socket test can observe or provoke.

Deno.test("a peer that left is never sent to again, even while it still reads as open", () => {
  const hub = new Hub({ history: 0 });
  const stays = joinStub(hub, "/r", "raw");
  const left = joinStub(hub, "/r", "raw");
  hub.leave(left.socket, "client");
  assert.equal(left.socket.readyState, OPEN, "the stub never closed");
  hub.publish("/r", "after leave", { id: "api", name: "API" });
  hub.flush();
  assert.deepEqual(stays.socket.sent, ["after leave"]);
  assert.deepEqual(left.socket.sent, []);
  void hub.dispose();
});

Deno.test("a peer dropped during a flush: each other member hears its leave exactly once", () => {
  const hub = new Hub({ history: 0, maxBufferedBytes: 100 });
  const slow = joinStub(hub, "/r");
  const withOwnFrame = joinStub(hub, "/r");
  const plain = joinStub(hub, "/r");
  hub.flush(); // welcomes and joins out of the way
  slow.socket.bufferedAmount = 1_000_000; // the next write finds it far too slow
  hub.reject(withOwnFrame, protocolError("invalid_json", "a frame of its own this turn"));
  hub.publish("/r", "hello", { id: "api", name: "API" });
  hub.flush(); // drops `slow` while writing; its leave goes out with the next flush
  hub.flush();
  for (const m of [withOwnFrame, plain]) {
    const leaves = m.socket.events().filter((e) => e.type === "leave" && e.id === slow.id);
    assert.equal(leaves.length, 1, `${m.id} heard the leave once`);
  }
  assert.deepEqual(slow.socket.closedWith, { code: 1008, reason: "slow consumer" });
  void hub.dispose();
});

Deno.test("closeAll closes peers that are still connecting too, and empties the hub", async () => {
  const hub = new Hub({ history: 0 });
  const open = joinStub(hub, "/r");
  const connecting = joinStub(hub, "/r", "chat", new StubPeer(CONNECTING));
  const closing = hub.closeAll(60_000);
  for (const m of [open, connecting]) {
    assert.deepEqual(m.socket.closedWith, { code: 1001, reason: "server shutting down" });
    m.socket.finishClose();
  }
  await closing; // resolves on the closes, long before the timeout
  assert.equal(hub.connections, 0);
  assert.equal(hub.admit("192.0.2.1"), "shutting_down");
  void hub.dispose();
});

Deno.test("a member's adapter is told once that it ended, on every way out", () => {
  const hub = new Hub({ history: 0 });
  const left = joinStub(hub, "/r");
  const dropped = joinStub(hub, "/r");
  const neverOpened = joinStub(hub, "/r", "chat", new StubPeer(CONNECTING));
  const shutDown = joinStub(hub, "/r");
  hub.leave(left.socket, "client");
  hub.leave(left.socket, "client");
  hub.drop(dropped.socket, "too_big");
  hub.leave(dropped.socket, "client"); // its transport reports the close later
  hub.drop(neverOpened.socket, "token_expired");
  void hub.closeAll(0);
  for (const m of [left, dropped, neverOpened, shutDown]) assert.equal(m.endedCount, 1, m.id);
  void hub.dispose();
});
