/**
 * chorus inside your own Deno app: the app keeps its routes (`/`, `/hello`) and mounts chorus
 * under `/ws`, where `ws://HOST:PORT/ws/ROOM` joins room `/ROOM` and `/ws/ROOM` in a browser
 * is the chat page.
 *
 * ```sh
 * PORT=8000 deno run --allow-net --allow-env=PORT examples/embed.ts
 * ```
 *
 * It prints `embed listening on http://HOST:PORT/` once listening (`PORT=0` picks a free
 * port). `GET /hello?name=Ada` answers with a greeting and announces it in room `/lobby`.
 * SIGINT or SIGTERM closes every socket with 1001 and exits 0. `docs/embedding.md` explains it.
 * @module
 */
import { createChorus } from "../mod.ts";

/** Where chorus is mounted in this app. */
const BASE = "/ws";

// Rooms' streams in memory: this example runs without file permissions. For conversations that
// survive restarts, leave `store` out (SQLite in ./data) and grant --allow-read=./data
// --allow-write=./data.
const chorus = await createChorus({ basePath: BASE, logLevel: "warn", store: "memory" });

/** True for the paths this app hands to chorus: the base itself and everything below it. */
function isChorus(pathname: string): boolean {
  return pathname === BASE || pathname.startsWith(`${BASE}/`);
}

const server = Deno.serve({
  port: Number(Deno.env.get("PORT") ?? "8000"),
  hostname: "127.0.0.1",
  onListen({ hostname, port }) {
    console.log(`embed listening on http://${hostname}:${port}/`);
  },
}, (req, info) => {
  const url = new URL(req.url);
  if (isChorus(url.pathname)) return chorus.handler(req, info);
  if (url.pathname === "/hello") {
    const name = url.searchParams.get("name") ?? "stranger";
    const delivered = chorus.publish("/lobby", `${name} said hello over HTTP`, "embed");
    return Response.json({ greeting: `hello, ${name}`, delivered });
  }
  if (url.pathname === "/") {
    return new Response(`my app; the chat is at ${BASE}/lobby\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  return new Response("not found\n", { status: 404 });
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await chorus.shutdown();
    await server.shutdown();
    Deno.exit(0);
  });
}
