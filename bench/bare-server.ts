/**
 * The floor under chorus' idle memory: `Deno.upgradeWebSocket` with chorus' 30 s heartbeat, the
 * socket kept in a `Set`, and nothing else: no listeners, no state of ours. The bench runs it
 * only in the idle group, with V8's young generation capped as `deno task start` caps it, so the
 * difference between its row and chorus' is what chorus itself costs per connection.
 *
 *   deno run --v8-flags=--max-semi-space-size=1 --allow-net bench/bare-server.ts PORT
 *
 * Prints `bare listening on http://127.0.0.1:PORT/` on stdout when ready, like chorus does.
 * @module
 */
const sockets = new Set<WebSocket>();

Deno.serve({
  port: Number(Deno.args[0] ?? 0),
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`bare listening on http://127.0.0.1:${port}/`),
}, (req) => {
  if (req.headers.get("upgrade") !== "websocket") return new Response("bare Deno sockets\n");
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 30 });
  sockets.add(socket);
  return response;
});
