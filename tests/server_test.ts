import assert from "node:assert/strict";
import { DEFAULTS } from "../src/config.ts";
import { Hub } from "../src/hub.ts";
import { createLogger } from "../src/log.ts";
import { createHandler, hasTraversal } from "../src/server.ts";
import { rawClient, startServer, UPGRADE_HEADERS, waitFor } from "./helpers.ts";

function inProcess() {
  const hub = new Hub({ history: 0 });
  const lines: string[] = [];
  const handler = createHandler({
    config: { ...DEFAULTS },
    hub,
    log: createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) }),
  });
  return {
    hub,
    lines,
    handle: (path: string, init?: RequestInit) =>
      handler(new Request(`http://chorus.test${path}`, init)),
  };
}

Deno.test("GET of any room path serves the chat page with type, ETag and Cache-Control", async () => {
  const { handle } = inProcess();
  for (const path of ["/", "/lobby", "/a/b"]) {
    const res = await handle(path);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(res.headers.get("etag") ?? "", /^"[0-9a-f]+-[0-9a-f]+"$/);
    assert.equal(res.headers.get("cache-control"), "no-cache");
    assert.match(res.headers.get("content-security-policy") ?? "", /script-src 'self'/);
    assert.match(await res.text(), /<html/i);
  }
});

Deno.test("the page's script and stylesheet are served with their content types", async () => {
  const { handle } = inProcess();
  const js = await handle("/_static/app.js");
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.ok((await js.text()).length > 0);
  const css = await handle("/_static/style.css");
  assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
  assert.ok((await css.text()).length > 0);
  const missing = await handle("/_static/nope.js");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
});

Deno.test("If-None-Match with the current ETag gets 304 without a body", async () => {
  const { handle } = inProcess();
  const first = await handle("/_static/app.js");
  const etag = first.headers.get("etag")!;
  await first.body?.cancel();
  const again = await handle("/_static/app.js", { headers: { "if-none-match": `W/"x", ${etag}` } });
  assert.equal(again.status, 304);
  assert.equal(again.headers.get("etag"), etag);
  assert.equal(await again.text(), "");
  const stale = await handle("/_static/app.js", { headers: { "if-none-match": '"stale"' } });
  assert.equal(stale.status, 200);
  await stale.body?.cancel();
});

Deno.test("HEAD gets the headers of GET and no body", async () => {
  const { handle } = inProcess();
  for (const path of ["/lobby", "/_static/app.js"]) {
    const get = await handle(path);
    const body = await get.arrayBuffer();
    const head = await handle(path, { method: "HEAD" });
    assert.equal(head.status, get.status, path);
    assert.deepEqual([...head.headers], [...get.headers], path);
    assert.equal(Number(head.headers.get("content-length")), body.byteLength, path);
    assert.equal(await head.text(), "", path);
  }
});

Deno.test("methods a path does not answer get 405 with an Allow header", async () => {
  const { handle } = inProcess();
  for (const method of ["PUT", "DELETE", "PATCH"]) {
    const res = await handle("/lobby", { method, ...(method === "DELETE" ? {} : { body: "x" }) });
    assert.equal(res.status, 405);
    assert.equal(
      res.headers.get("allow"),
      "GET, HEAD, POST, OPTIONS",
      "a room takes POSTed events",
    );
    assert.equal((await res.json()).error.code, "method_not_allowed");
  }
  for (const method of ["POST", "PUT"]) {
    const res = await handle("/healthz", { method, body: "x" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    await res.body?.cancel();
  }
});

Deno.test("path traversal attempts get 404, over a real socket with the raw request target", async () => {
  const server = await startServer();
  try {
    for (
      const target of [
        "/_static/../../etc/passwd",
        "/..",
        "/a/%2e%2e/b",
        "/_static/..%2f..%2fmain.ts",
        "/a\\..\\b",
        "/%zz",
      ]
    ) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await conn.write(
        new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
      );
      const response = await new Response(conn.readable).text();
      assert.match(response, /^HTTP\/1.1 (404|400)/, `${target} → ${response.split("\r\n")[0]}`);
    }
  } finally {
    await server.close();
  }
});

Deno.test("hasTraversal accepts ordinary room paths", () => {
  for (const ok of ["http://h/", "http://h/lobby", "http://h/a.b/c..d", "http://h/x?q=../y"]) {
    assert.equal(hasTraversal(ok), false, ok);
  }
  assert.equal(hasTraversal("http://h/a/../b"), true);
});

Deno.test("/healthz reports status, connections and rooms", async () => {
  const server = await startServer();
  try {
    const health = async () => await (await fetch(`${server.origin}/healthz`)).json();
    assert.deepEqual({ ...(await health()), uptime: 0 }, {
      status: "ok",
      connections: 0,
      rooms: 0,
      uptime: 0,
    });
    const a = await rawClient(server.ws("/a"));
    await rawClient(server.ws("/a"));
    await rawClient(server.ws("/b"));
    await waitFor(() => server.hub.connections === 3, "3 connections");
    const h = await health();
    assert.equal(h.connections, 3);
    assert.equal(h.rooms, 2);
    await a.close();
    await waitFor(() => server.hub.connections === 2, "a closed");
    assert.equal((await health()).connections, 2);
  } finally {
    await server.close();
  }
});

Deno.test("malformed upgrade requests are refused with 4xx before any socket exists", async () => {
  const { handle, hub, lines } = inProcess();
  const base = UPGRADE_HEADERS;
  const cases: [Record<string, string>, number, string, string?][] = [
    [{ "sec-websocket-version": "8" }, 426, "unsupported_version"],
    [{ "sec-websocket-key": "" }, 400, "bad_request"],
    [{ "sec-websocket-protocol": "mqtt, stomp" }, 400, "unsupported_protocol"],
  ];
  for (const [override, status, code] of cases) {
    const res = await handle("/r", { headers: { ...base, ...override } });
    assert.equal(res.status, status);
    assert.equal((await res.json()).error.code, code);
  }
  const post = await handle("/r", { method: "POST", headers: base });
  assert.equal(post.status, 405);
  await post.body?.cancel();
  assert.equal(hub.connections, 0);
  assert.ok(lines.some((l) => JSON.parse(l).msg === "upgrade refused"), "refusals are logged");
});

Deno.test("upgrades that arrive during shutdown are refused with 503 shutting_down", async () => {
  const server = startServer();
  try {
    const a = await rawClient(server.ws("/r"));
    const closing = server.hub.closeAll();
    const res = await fetch(`${server.origin}/r`, {
      headers: UPGRADE_HEADERS,
    });
    assert.equal(res.status, 503);
    assert.equal((await res.json()).error.code, "shutting_down");
    assert.deepEqual(await a.closed, { code: 1001, reason: "server shutting down" });
    await closing;
  } finally {
    await server.close();
  }
});
