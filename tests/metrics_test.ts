/**
 * `GET /metrics` over a real server: the content type, exact counter values after known raw and
 * chat traffic, and a valid exposition according to Prometheus' own `promtool check metrics`.
 * Without `promtool` (Debian package `prometheus`) the promtool test is registered as ignored
 * with the reason in its name.
 */
import assert from "node:assert/strict";
import {
  ChatClient,
  chatClient,
  type Client,
  rawClient,
  runToEnd,
  startServer,
  UPGRADE_HEADERS,
  waitFor,
} from "./helpers.ts";
import { utf8Length } from "../src/metrics.ts";

const encoder = new TextEncoder();

/** Parse the exposition into `name{labels}` → value; fails on a line it does not understand. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-z_]+(?:\{[^}]*\})?) (\S+)$/);
    assert.ok(m, `unparsable sample line: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function scrape(origin: string): Promise<{ contentType: string | null; text: string }> {
  const res = await fetch(`${origin}/metrics`);
  assert.equal(res.status, 200);
  return { contentType: res.headers.get("content-type"), text: await res.text() };
}

const UPGRADE = UPGRADE_HEADERS;

/** Bytes of every frame a client received so far, as the server counted them when sending. */
function frameBytes(frames: (string | ArrayBuffer)[]): number {
  return frames.reduce(
    (sum, f) => sum + (typeof f === "string" ? encoder.encode(f).byteLength : f.byteLength),
    0,
  );
}

/** Record every frame a client receives, besides whatever else its handler does. */
function record(client: Client): (string | ArrayBuffer)[] {
  const seen: (string | ArrayBuffer)[] = [];
  client.socket.addEventListener("message", (e) => seen.push(e.data));
  return seen;
}

Deno.test("GET /metrics is text/plain version 0.0.4 and starts at zero", async () => {
  const server = startServer();
  try {
    const { contentType, text } = await scrape(server.origin);
    assert.match(contentType ?? "", /^text\/plain; version=0\.0\.4(;|$)/);
    const s = samples(text);
    for (const [key, value] of s) assert.equal(value, 0, key);
    for (
      const name of [
        "chorus_messages_received_total",
        "chorus_messages_delivered_total",
        "chorus_received_bytes_total",
        "chorus_sent_bytes_total",
        "chorus_rooms",
        'chorus_connections{mode="raw",transport="websocket"}',
        'chorus_connections{mode="chat",transport="websocket"}',
        'chorus_connections{mode="chat",transport="sse"}',
        'chorus_disconnects_total{reason="client"}',
        'chorus_upgrades_refused_total{reason="bad_origin"}',
      ]
    ) assert.ok(s.has(name), `${name} is exposed`);
    assert.match(text, /^# TYPE chorus_connections gauge$/m);
    assert.match(text, /^# TYPE chorus_messages_delivered_total counter$/m);
  } finally {
    await server.close();
  }
});

Deno.test("counters have exact values after known raw and chat traffic", async () => {
  const server = startServer({ maxMessageBytes: 1000 });
  try {
    // Room /m: two raw clients and one chat client.
    const a = await rawClient(server.ws("/m"));
    const b = await rawClient(server.ws("/m"));
    await waitFor(() => server.hub.membersOf("/m").length === 2, "a and b joined");
    const aSeen = record(a);
    const bSeen = record(b);
    const c = new ChatClient(server.ws("/m?name=Cy"));
    const cSeen = record(c); // attached before the welcome can arrive
    await c.opened;
    const welcome = await c.next("welcome");
    // delivered so far: welcome to c (raw clients hear no join).
    assert.equal(welcome.members.length, 3);

    // 1. a raw text frame of 5 bytes: to a and b verbatim (2), to c as a message event (1).
    a.send("hello");
    assert.equal(await a.text(), "hello");
    assert.equal(await b.text(), "hello");
    assert.equal((await c.next("message")).text, "hello");

    // 2. a raw binary frame of 3 bytes: to a and b only (2).
    b.send(new Uint8Array([1, 2, 3]));
    for (const client of [a, b]) {
      const f = await client.frames.next("binary frame");
      assert.ok(f instanceof ArrayBuffer);
      assert.equal(f.byteLength, 3);
    }

    // 3. a chat message "hé" (3 UTF-8 bytes): to a and b as text (2), to c as an event (1).
    const chatFrame = JSON.stringify({ type: "message", text: "hé" });
    c.send(chatFrame);
    assert.equal(await a.text(), "hé");
    assert.equal(await b.text(), "hé");
    assert.equal((await c.next("message")).text, "hé");

    // 4. refused upgrades, one per reason we can provoke from one address.
    const refusals: [Record<string, string>, string, number][] = [
      [{ origin: "http://evil.example" }, "?", 403],
      [{ "sec-websocket-protocol": "mqtt" }, "?", 400],
      [{ "sec-websocket-version": "8" }, "?", 426],
      [{}, "?name=%20", 400],
    ];
    for (const [headers, query, status] of refusals) {
      const res = await fetch(`${server.origin}/m${query}`, {
        headers: { ...UPGRADE, ...headers },
      });
      assert.equal(res.status, status);
      await res.body?.cancel();
    }

    // 5. a raw client in another room sends 1001 bytes over --max-message-bytes: closed 1009.
    const d = await rawClient(server.ws("/other"));
    await waitFor(() => server.hub.rooms === 2, "d joined /other");
    d.send("x".repeat(1001));
    assert.deepEqual(await d.closed, { code: 1009, reason: "message too big" });

    // 6. b leaves: c hears `leave` (1).
    await b.close();
    assert.equal((await c.next("leave")).id, welcome.members[1].id);
    await waitFor(() => server.hub.connections === 2, "b and d gone");

    const { text } = await scrape(server.origin);
    const s = samples(text);
    const get = (k: string) => {
      assert.ok(s.has(k), `${k} is exposed`);
      return s.get(k);
    };

    assert.equal(get('chorus_connections{mode="raw",transport="websocket"}'), 1);
    assert.equal(get('chorus_connections{mode="chat",transport="websocket"}'), 1);
    assert.equal(get('chorus_connections{mode="chat",transport="sse"}'), 0);
    assert.equal(get("chorus_rooms"), 1);
    assert.equal(get("chorus_messages_received_total"), 4, "a text, b binary, c chat, d too big");
    assert.equal(
      get("chorus_received_bytes_total"),
      5 + 3 + utf8Length(chatFrame) + 1001,
    );
    // welcome 1 + hello (2 raw + 1 chat) + binary 2 + hé (2 raw + 1 chat) + leave 1
    assert.equal(get("chorus_messages_delivered_total"), 10);
    assert.equal(
      get("chorus_sent_bytes_total"),
      frameBytes(aSeen) + frameBytes(bSeen) + frameBytes(cSeen),
      "every byte the clients received, no more",
    );
    assert.equal(frameBytes(aSeen), 5 + 3 + 3);
    assert.equal(frameBytes(bSeen), 5 + 3 + 3);
    assert.equal(get('chorus_disconnects_total{reason="client"}'), 1);
    assert.equal(get('chorus_disconnects_total{reason="too_big"}'), 1);
    for (const r of ["slow_consumer", "rate_limited", "idle", "shutdown", "error"]) {
      assert.equal(get(`chorus_disconnects_total{reason="${r}"}`), 0, r);
    }
    assert.equal(get('chorus_upgrades_refused_total{reason="bad_origin"}'), 1);
    assert.equal(get('chorus_upgrades_refused_total{reason="bad_protocol"}'), 1);
    assert.equal(get('chorus_upgrades_refused_total{reason="bad_request"}'), 1);
    assert.equal(get('chorus_upgrades_refused_total{reason="bad_name"}'), 1);
    assert.equal(get('chorus_upgrades_refused_total{reason="max_connections"}'), 0);
    assert.equal(get('chorus_upgrades_refused_total{reason="max_connections_per_ip"}'), 0);
    await a.close();
    await c.close();
  } finally {
    await server.close();
  }
});

/** Whether Prometheus' `promtool` can run here, and why not when it cannot. */
async function findPromtool(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("promtool", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success ? undefined : `promtool --version exited ${out.code}`;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return "promtool is not installed (apt-get install prometheus)";
    }
    throw err;
  }
}

const noPromtool = await findPromtool();

Deno.test({
  name: noPromtool === undefined
    ? "promtool check metrics accepts the exposition, lint included"
    : `promtool check metrics accepts the exposition (ignored: ${noPromtool})`,
  ignore: noPromtool !== undefined,
  async fn() {
    const server = startServer();
    try {
      const a = await rawClient(server.ws("/p"));
      const { client: c } = await chatClient(server.ws("/p"));
      a.send("to everyone");
      assert.equal(await a.text(), "to everyone");
      assert.equal((await c.next("message")).text, "to everyone");
      const bad = await fetch(`${server.origin}/p`, {
        headers: { ...UPGRADE, origin: "http://evil.example" },
      });
      assert.equal(bad.status, 403);
      await bad.body?.cancel();
      const { text } = await scrape(server.origin);
      assert.ok(samples(text).get("chorus_messages_delivered_total")! > 0, "non-zero counters");
      // `promtool check metrics` exits 0 when the text parses and passes every lint check,
      // 1 on a parse error and 3 when it only has lint problems; all but 0 fail this test.
      const out = await runToEnd("promtool", { args: ["check", "metrics"], stdin: text });
      assert.equal(out.code, 0, `promtool exit ${out.code}: ${out.stdout}${out.stderr}\n${text}`);
      await a.close();
      await c.close();
    } finally {
      await server.close();
    }
  },
});

/** Value of one sample in a scrape of `origin`. */
async function sample(origin: string, key: string): Promise<number | undefined> {
  return samples((await scrape(origin)).text).get(key);
}

Deno.test("slow_consumer counts only slow readers: prompt readers of a > 1 MiB burst or welcome stay", async () => {
  // --max-buffered-bytes is "unsent bytes a socket may queue before it is closed as a slow
  // consumer". Both clients below read everything at once, over loopback.
  const server = startServer();
  const slow = 'chorus_disconnects_total{reason="slow_consumer"}';
  const problems: string[] = [];
  try {
    // 1. A raw client sends 50 frames of 60,000 bytes in one go (within --rate-burst 100 and
    //    --max-message-bytes 65536) and reads its own echoes as they come.
    const a = await rawClient(server.ws("/burst"));
    const frame = "b".repeat(60_000);
    for (let i = 0; i < 50; i++) a.send(frame);
    let echoes = 0;
    const end = await Promise.race([
      a.closed.then((c) => `closed ${c.code}`),
      (async () => {
        while (echoes < 50) {
          await a.text();
          echoes++;
        }
        return "open";
      })().catch((e) => `error ${e.message}`),
    ]);
    if (end !== "open") problems.push(`burst: the sender got ${echoes}/50 echoes, then ${end}`);
    const afterBurst = await sample(server.origin, slow);
    if (afterBurst !== 0) problems.push(`burst: ${slow} is ${afterBurst}`);
    await a.close();

    // 2. A room's history holds 50 raw messages of 25,000 bytes (sent one at a time), so a
    //    chat client's welcome is about 1.25 MB; the joiner reads it at once.
    const b = await rawClient(server.ws("/history"));
    const text = "h".repeat(25_000);
    for (let i = 0; i < 50; i++) {
      b.send(text);
      assert.equal((await b.text()).length, 25_000);
    }
    await b.close();
    const c = new ChatClient(server.ws("/history"));
    const welcome = await c.next("welcome");
    assert.equal(welcome.history.length, 50);
    c.say("still here?");
    const next = await Promise.race([
      c.until("message").then((m) => `message ${m.text}`).catch((e) => `error ${e.message}`),
      c.closed.then((cl) => `closed ${cl.code} ${cl.reason}`),
    ]);
    if (next !== "message still here?") problems.push(`welcome: after the welcome, ${next}`);
    const afterWelcome = await sample(server.origin, slow);
    if (afterWelcome !== afterBurst) {
      problems.push(`welcome: ${slow} went from ${afterBurst} to ${afterWelcome}`);
    }
    await c.close();
    assert.deepEqual(problems, [], problems.join("\n"));
  } finally {
    await server.close();
  }
});

Deno.test("docs/operations.md documents every metric with its type and every label value", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/operations.md", import.meta.url));
  const server = startServer();
  try {
    const { text } = await scrape(server.origin);
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      const row = doc.split("\n").find((l) => l.startsWith(`| \`${name}\``));
      assert.ok(row, `docs/operations.md has a row for ${name}`);
      assert.equal(row.split("|")[2]!.trim(), type, `${name} type`);
      for (
        const [, label, value] of text.matchAll(new RegExp(`^${name}\\{(\\w+)="(\\w+)"\\}`, "gm"))
      ) {
        assert.ok(row.includes(`\`${label}\``) && row.includes(`\`${value}\``), `${name} ${value}`);
      }
    }
  } finally {
    await server.close();
  }
});
