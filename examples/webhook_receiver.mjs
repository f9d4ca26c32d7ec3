/**
 * A webhook receiver for chorus in Node.js: it verifies each request's signature by the recipe
 * of `docs/hooks.md#verifying-a-request` and prints the events, one JSON line each.
 *
 * ```sh
 * CHORUS_WEBHOOK_SECRET=... PORT=9000 node examples/webhook_receiver.mjs
 * ```
 *
 * A request whose signature does not verify gets 401, which chorus retries; a verified one gets
 * 204. `tests/webhook_receivers_test.ts` runs it with `node` against a real chorus.
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** Whether a request is chorus' own: its signature verifies and its timestamp is fresh. */
export function verify(secret, ts, body, sig) {
  const mac = createHmac("sha256", secret).update(`${ts}.${body}`).digest("hex");
  const [a, b] = [Buffer.from(sig), Buffer.from(`sha256=${mac}`)];
  const fresh = Math.abs(Date.now() - Number(ts)) < 5 * 60_000; // refuse replays
  return fresh && a.length === b.length && timingSafeEqual(a, b);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const secret = process.env.CHORUS_WEBHOOK_SECRET ?? "";
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => body += chunk);
    req.on("end", () => {
      const timestamp = req.headers["x-chorus-timestamp"] ?? "";
      const signature = req.headers["x-chorus-signature"] ?? "";
      if (!verify(secret, timestamp, body, signature)) {
        console.log(`refused ${req.headers["x-chorus-delivery"]}`);
        res.writeHead(401).end();
        return;
      }
      for (const event of JSON.parse(body).events) console.log(JSON.stringify(event));
      res.writeHead(204).end();
    });
  });
  server.listen(Number(process.env.PORT ?? 9000), "127.0.0.1", () => {
    console.log(`webhook receiver listening on ${server.address().port}`);
  });
}
