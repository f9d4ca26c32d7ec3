/**
 * The naive Deno hub the issue compares against: a `Set` of sockets and a `send` loop, with
 * Deno's defaults (120 s `idleTimeout`, V8's default heap sizes) and no limits. It shows what
 * `Deno.upgradeWebSocket` itself costs, so the bench can tell chorus' own cost from Deno's.
 * Every message goes to every open client, the sender included, with its frame type kept.
 *
 *   deno run --allow-net bench/deno-server.ts PORT     (0 picks a free port)
 *
 * Prints `deno listening on http://127.0.0.1:PORT/` on stdout when ready, like chorus does.
 * @module
 */
const sockets = new Set<WebSocket>();

Deno.serve({
  port: Number(Deno.args[0] ?? 0),
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`deno listening on http://127.0.0.1:${port}/`),
}, (req) => {
  if (req.headers.get("upgrade") !== "websocket") return new Response("naive Deno hub\n");
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onopen = () => sockets.add(socket);
  socket.onmessage = (e) => {
    for (const s of sockets) {
      if (s.readyState === WebSocket.OPEN) s.send(e.data);
    }
  };
  socket.onclose = () => sockets.delete(socket);
  socket.onerror = (e) => console.error(e instanceof ErrorEvent ? e.message : e);
  return response;
});
