/**
 * The baseline: the classic broadcast server from the `ws` README, unchanged except that it
 * binds loopback only and says where it listens. Every message goes to every open client,
 * the sender included, with its frame type kept.
 *
 *   node bench/ws-server.mjs PORT     (0 picks a free port)
 *
 * Prints `ws listening on http://127.0.0.1:PORT/` on stdout when ready, like chorus does.
 * @module
 */
import process from "node:process";
import { WebSocket, WebSocketServer } from "ws";

const wss = new WebSocketServer({
  port: Number(process.argv[2] ?? 0),
  host: "127.0.0.1",
});

wss.on("connection", function connection(ws) {
  ws.on("error", console.error);
  ws.on("message", function message(data, isBinary) {
    wss.clients.forEach(function each(client) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on("listening", () => {
  console.log(`ws listening on http://127.0.0.1:${wss.address().port}/`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
