/**
 * The outbox without sockets (batching, frames of one's own, slow and broken peers), and over
 * real sockets what `DENO_USE_WRITEV` (docs/operations.md) changes in what a socket keeps.
 */
import assert from "node:assert/strict";
import { Metrics } from "../src/metrics.ts";
import { Outbox, SLOW_CONSUMER_HARD_FACTOR } from "../src/outbox.ts";
import type { Peer } from "../src/transport.ts";
import { DENO, Inbox, killIfRunning, PROCESS_TIMEOUT_MS, ROOT, within } from "./helpers.ts";
import { StubPeer } from "./stub_peer.ts";

function outbox(maxBufferedBytes = 1000) {
  const slow = new Inbox<Peer>();
  const broken: Peer[] = [];
  const box = new Outbox({
    maxBufferedBytes,
    metrics: new Metrics(),
    onSlow: (peer) => slow.push(peer),
    onBroken: (peer) => void broken.push(peer),
  });
  return { box, slow, broken };
}

const line = (n: number) => JSON.stringify({ type: "message", text: `m${n}` });

Deno.test("a room's events go out as one frame shared by its peers, built once", () => {
  const { box } = outbox();
  const [a, b] = [new StubPeer(), new StubPeer()];
  const room = new Set<Peer>([a, b]);
  box.toRoom(room, line(1), 10);
  box.toRoom(room, line(2), 10);
  assert.equal(a.sent.length, 0, "nothing is written before the flush");
  box.flush();
  assert.deepEqual(a.sent, [`${line(1)}\n${line(2)}`]);
  assert.equal(b.sent[0], a.sent[0]);
  box.dispose();
});

Deno.test("a peer with events of its own gets them in place among the room's, in one frame", () => {
  const { box } = outbox();
  const [a, b] = [new StubPeer(), new StubPeer()];
  const room = new Set<Peer>([a, b]);
  box.toRoom(room, line(1), 10);
  box.toPeer(room, a, '{"type":"error"}', 16);
  box.toRoom(room, line(2), 10);
  box.flush();
  assert.deepEqual(a.sent, [`${line(1)}\n{"type":"error"}\n${line(2)}`]);
  assert.deepEqual(b.sent, [`${line(1)}\n${line(2)}`]);
  box.dispose();
});

Deno.test("a fresh peer skips what the room had pending; an excluded peer misses one event", () => {
  const { box } = outbox();
  const [a, b, c] = [new StubPeer(), new StubPeer(), new StubPeer()];
  const room = new Set<Peer>([a, b, c]);
  box.toRoom(room, line(1), 10);
  box.toPeer(room, c, '{"type":"welcome"}', 18, true);
  box.toRoom(room, '{"type":"join"}', 15, c);
  box.toRoom(room, line(2), 10);
  box.flush();
  assert.deepEqual(c.sent, [`{"type":"welcome"}\n${line(2)}`]);
  assert.deepEqual(a.sent, [`${line(1)}\n{"type":"join"}\n${line(2)}`]);
  box.dispose();
});

Deno.test("sendAll writes at once to open peers only, and a throwing peer is reported broken", () => {
  const { box, broken } = outbox();
  const [open, closing, failing] = [new StubPeer(), new StubPeer(2), new StubPeer()];
  failing.failWith = new DOMException("gone", "InvalidStateError");
  box.sendAll(new Set<Peer>([open, closing, failing]), "raw", 3);
  assert.deepEqual(open.sent, ["raw"]);
  assert.deepEqual(closing.sent, []);
  assert.deepEqual(broken, [failing]);
  box.dispose();
});

Deno.test("a queue far over the limit is slow at once; one just over it after the grace", async () => {
  const { box, slow } = outbox(1000);
  const [far, near, fine] = [new StubPeer(), new StubPeer(), new StubPeer()];
  far.bufferedAmount = SLOW_CONSUMER_HARD_FACTOR * 1000 + 1;
  near.bufferedAmount = 1001;
  box.sendAll(new Set<Peer>([far, near, fine]), "x", 1);
  assert.equal(slow.size, 1, "the far one at once, the near one not yet");
  assert.equal(await slow.next("the far peer"), far);
  assert.equal(await slow.next("the near peer, after the grace"), near);
  assert.equal(slow.size, 0, "the fine peer is never slow");
  box.dispose();
});

Deno.test("a peer that drained during the grace is not slow", async () => {
  const { box, slow } = outbox(1000);
  const drained = new StubPeer();
  const stuck = new StubPeer();
  drained.bufferedAmount = stuck.bufferedAmount = 1500;
  box.sendAll(new Set<Peer>([drained, stuck]), "x", 1);
  drained.bufferedAmount = 0;
  // Both are judged in the same turn: once the stuck one is reported, the verdict is complete.
  assert.equal(await slow.next("the stuck peer"), stuck);
  assert.equal(slow.size, 0);
  box.dispose();
});

Deno.test("a flush asked for from inside a flush is left to the next one: nothing lost or doubled", () => {
  const room = new Set<Peer>();
  const broken = new StubPeer();
  broken.failWith = new DOMException("gone", "InvalidStateError");
  const other = new StubPeer();
  room.add(broken).add(other);
  const box: Outbox = new Outbox({
    maxBufferedBytes: 1000,
    metrics: new Metrics(),
    onSlow() {},
    onBroken(peer) {
      // What a hub does with a broken peer: remove it and tell the room, here at once.
      room.delete(peer);
      box.toRoom(room, '{"type":"leave"}', 16);
      box.flush();
    },
  });
  box.toRoom(room, line(1), 10);
  box.flush();
  assert.deepEqual(other.sent, [line(1)]);
  box.flush();
  assert.deepEqual(other.sent, [line(1), '{"type":"leave"}']);
  box.flush();
  assert.equal(other.sent.length, 2);
  box.dispose();
});

/**
 * What a server-side socket keeps of the frames it was sent, measured in a child process: each
 * of `sockets` clients is sent one frame of 1 MiB, one after the other.
 */
async function keptAfterLargeFrames(vectored: boolean, sockets: number) {
  const child = new Deno.Command(DENO, {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "tests/fixtures/write_buffers.ts",
      String(sockets),
      String(2 ** 20),
    ],
    cwd: ROOT,
    env: { DENO_USE_WRITEV: vectored ? "1" : "" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const clients: WebSocket[] = [];
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const nextLine = async (what: string) => {
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the child ended before ${what}; stdout=${out}`);
      out += value;
    }
    const line = out.slice(0, out.indexOf("\n"));
    out = out.slice(line.length + 1);
    return line;
  };
  try {
    const next = async (what: string) =>
      JSON.parse(await within(nextLine(what), what, PROCESS_TIMEOUT_MS));
    const { port } = await next("the child's port");
    for (let i = 0; i < sockets; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      ws.onmessage = () => ws.send("ok");
      clients.push(ws);
    }
    const result: { growthMiB: number } = await next("the measurement");
    assert.equal((await child.status).code, 0);
    return result;
  } finally {
    killIfRunning(child);
    await reader.cancel();
    await Promise.all(clients.map((ws) => {
      if (ws.readyState === WebSocket.CLOSED) return;
      const closed = new Promise((resolve) => ws.addEventListener("close", resolve));
      ws.close();
      return closed;
    }));
  }
}

Deno.test("DENO_USE_WRITEV=1 keeps a socket from holding a copy of its largest frame", async () => {
  const sockets = 48;
  // The control, Deno's default: each socket keeps a write buffer as large as its largest frame.
  const off = await keptAfterLargeFrames(false, sockets);
  assert.ok(off.growthMiB > 0.75 * sockets, `off: RSS grew ${off.growthMiB.toFixed(1)} MiB`);
  const on = await keptAfterLargeFrames(true, sockets);
  assert.ok(on.growthMiB < 0.25 * sockets, `on: RSS grew ${on.growthMiB.toFixed(1)} MiB`);
});
