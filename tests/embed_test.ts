/**
 * The library entry point `mod.ts`: `createChorus` in-process (publish, rooms, shutdown, the
 * base path, option checks, documented defaults) and `examples/embed.ts` run as a user runs it.
 */
import assert from "node:assert/strict";
import { createChorus } from "../mod.ts";
import { DEFAULTS } from "../src/config.ts";
import { startEmbedded } from "./embedded.ts";
import { chatClient, type Client, DENO, rawClient, ROOT, UPGRADE_HEADERS } from "./helpers.ts";

const KEY = "embed-test-key-0123456789";

/** A raw client that has joined: its own frame came back, so the hub has it in the room. */
async function joinedRaw(url: string): Promise<Client> {
  const client = await rawClient(url);
  client.send("ping");
  assert.equal(await client.text(), "ping");
  return client;
}

Deno.test("createChorus: publish reaches raw and chat clients under /ws/ROOM, rooms() lists them", async () => {
  const app = await startEmbedded({ apiKey: KEY });
  try {
    const raw = await joinedRaw(app.ws("/ws/lobby"));
    const { client: chat, welcome } = await chatClient(app.ws("/ws/lobby?name=ada"));
    assert.equal(welcome.room, "/lobby", "the base path is not part of the room");
    assert.equal(app.chorus.publish("/lobby", "from the app", "embed"), 2);
    assert.equal(await raw.text(), "from the app");
    const message = await chat.until("message");
    assert.deepEqual(message.from, { id: "server", name: "embed" });
    assert.equal(message.text, "from the app");

    assert.equal(app.chorus.publish("/lobby", new Uint8Array([1, 2, 3])), 1, "raw clients only");
    assert.deepEqual(
      new Uint8Array(await raw.frames.next("a binary frame") as ArrayBuffer),
      new Uint8Array([1, 2, 3]),
    );
    assert.equal(app.chorus.publish("/empty", "nobody"), 0);

    const [lobby, ...others] = app.chorus.rooms();
    assert.deepEqual(others, []);
    assert.ok(lobby, "one room");
    assert.equal(lobby.room, "/lobby");
    assert.deepEqual(lobby.members.map((m) => m.mode).sort(), ["chat", "raw"]);
    assert.ok(lobby.members.some((m) => m.name === "ada" && m.id === welcome.id));

    assert.throws(() => app.chorus.publish("lobby", "x"), TypeError);
    assert.throws(() => app.chorus.publish("/lobby", "x", ""), TypeError);
    raw.close();
    chat.close();
  } finally {
    await app.close();
  }
});

Deno.test("createChorus: shutdown closes every socket with 1001 and refuses later upgrades", async () => {
  const app = await startEmbedded({ apiKey: KEY });
  try {
    const a = await joinedRaw(app.ws("/ws/a"));
    const { client: b } = await chatClient(app.ws("/ws/b"));
    await app.chorus.shutdown();
    assert.deepEqual(await a.closed, { code: 1001, reason: "server shutting down" });
    assert.deepEqual(await b.closed, { code: 1001, reason: "server shutting down" });
    assert.deepEqual(app.chorus.rooms(), []);
    const late = await app.chorus.handler(
      new Request("http://127.0.0.1/ws/a", { headers: UPGRADE_HEADERS }),
    );
    assert.equal(late.status, 503);
    await late.body?.cancel();
  } finally {
    await app.close(); // a second shutdown is harmless
  }
});

Deno.test("basePath: chorus answers only under it, with its page, assets, /healthz and /api", async () => {
  const app = await startEmbedded({ apiKey: KEY });
  try {
    const get = (path: string, init?: RequestInit) => fetch(`${app.origin}${path}`, init);
    const page = await get("/ws/lobby");
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /<meta name="chorus-base" content="\/ws">/);
    assert.match(html, /src="\/ws\/_static\/app\.js"/);
    assert.match(html, /href="\/ws\/_static\/style\.css"/);
    const script = await get("/ws/_static/app.js");
    assert.equal(script.status, 200);
    assert.match(await script.text(), /chorus-base/);
    const library = await get("/ws/chorus.js");
    assert.equal(library.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.match(await library.text(), /export function connect/);
    const health = await get("/ws/healthz");
    assert.equal((await health.json()).status, "ok");
    const metrics = await get("/ws/metrics");
    assert.match(await metrics.text(), /^# HELP /m);
    const rooms = await get("/ws/api/rooms", { headers: { authorization: `Bearer ${KEY}` } });
    assert.deepEqual(await rooms.json(), { rooms: [] });
    for (const path of ["/healthz", "/api/rooms", "/wsx", "/"]) {
      const own = await get(path);
      assert.equal(await own.text(), `own route ${path}`, `${path} stays the app's`);
    }
    // Called for a path outside its base, the handler itself answers 404.
    const outside = await app.chorus.handler(new Request("http://127.0.0.1/elsewhere"));
    assert.equal(outside.status, 404);
    assert.equal((await outside.json()).error.code, "not_found");
    const root = await chatClient(app.ws("/ws"));
    assert.equal(root.welcome.room, "/");
    root.client.close();
  } finally {
    await app.close();
  }
});

Deno.test("createChorus refuses bad options with a ConfigError naming the option", async () => {
  for (
    const [options, pattern] of [
      [{ rateBurst: 0 }, /^rateBurst: expected an integer from 1/],
      [{ retainMessages: 1.5 }, /^retainMessages: expected an integer/],
      [{ store: "redis" }, /^store: --store redis needs --redis-url/],
      [{ allowedOrigins: ["example.com"] }, /^allowedOrigins: "example.com" is not an origin/],
      [{ apiKey: "short" }, /^apiKey: must be at least 16 characters/],
      [{ basePath: "ws" }, /^basePath: expected a path like \/ws/],
      [{ basePath: "/a/../b" }, /^basePath: /],
      [{ basePath: '/"x' }, /^basePath: /],
      [{ jwtIssuer: "me" }, /^jwtAudience and jwtIssuer need jwtSecret or jwtPublicKeyPem$/],
      [{ jwtPublicKeyPem: "not a key" }, /^jwtPublicKeyPem: /],
    ] as [Parameters<typeof createChorus>[0], RegExp][]
  ) {
    await assert.rejects(createChorus(options), (err: Error) => {
      assert.equal(err.name, "ConfigError", JSON.stringify(options));
      assert.match(err.message, pattern);
      return true;
    });
  }
});

Deno.test("every ChorusOptions field documents a @default, and it is the CLI's DEFAULTS value", async () => {
  const source = await Deno.readTextFile(`${ROOT}mod.ts`);
  const body = source.slice(
    source.indexOf("export interface ChorusOptions"),
    source.indexOf("\n}\n", source.indexOf("export interface ChorusOptions")),
  );
  const fields = [...body.matchAll(/@default (.+)\n\s*\*\/\n\s*(\w+)\?:/g)];
  const declared = [...body.matchAll(/^ {2}(\w+)\?:/gm)].map((m) => m[1]);
  assert.deepEqual(fields.map((m) => m[2]), declared, "a @default right above every field");
  const defaults: Record<string, unknown> = {
    ...DEFAULTS,
    basePath: "",
    jwtPublicKeyPem: undefined,
  };
  for (const [, literal = "", field = ""] of fields) {
    assert.ok(field in defaults, `${field} has a default in DEFAULTS`);
    const documented = literal === "undefined" ? undefined : JSON.parse(literal);
    assert.deepEqual(documented, defaults[field], `@default of ${field}`);
  }
});

Deno.test("examples/embed.ts: its own routes answer and a WebSocket under /ws/ROOM relays", async () => {
  const child = new Deno.Command(DENO, {
    args: ["run", "--allow-net", "--allow-env=PORT", "examples/embed.ts"],
    cwd: ROOT,
    env: { PORT: "0" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let exited = false;
  void child.status.then(() => exited = true);
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  while (!stdout.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    stdout += value;
  }
  const match = stdout.match(/^embed listening on (http:\/\/127\.0\.0\.1:(\d+)\/)\n$/);
  if (!match) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`no listening line; stdout=${stdout} stderr=${await stderr}`);
  }
  const [, url = "", port = ""] = match;
  try {
    const home = await fetch(url);
    assert.equal(await home.text(), "my app; the chat is at /ws/lobby\n");
    const a = await joinedRaw(`ws://127.0.0.1:${port}/ws/lobby`);
    const b = await joinedRaw(`ws://127.0.0.1:${port}/ws/lobby`);
    assert.equal(await a.text(), "ping", "b's ping reached a too");
    a.send("through the embedded hub");
    assert.equal(await b.text(), "through the embedded hub");
    assert.equal(await a.text(), "through the embedded hub");
    const hello = await fetch(`${url}hello?name=Ada`);
    assert.deepEqual(await hello.json(), { greeting: "hello, Ada", delivered: 2 });
    assert.equal(await a.text(), "Ada said hello over HTTP");
    assert.equal(await b.text(), "Ada said hello over HTTP");
    const health = await fetch(`${url}ws/healthz`);
    assert.equal((await health.json()).connections, 2);
    child.kill("SIGTERM");
    assert.deepEqual(await a.closed, { code: 1001, reason: "server shutting down" });
    assert.deepEqual(await b.closed, { code: 1001, reason: "server shutting down" });
    assert.equal((await child.status).code, 0);
    assert.equal(await stderr, "", "nothing logged at --log-level warn");
  } finally {
    await reader.cancel();
    if (!exited) child.kill("SIGKILL"); // a failed assertion left it running
    await child.status;
  }
});
