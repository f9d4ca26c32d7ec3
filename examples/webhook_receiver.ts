/**
 * A webhook receiver for chorus in Deno: it verifies each request's signature by the recipe of
 * `docs/hooks.md#verifying-a-request` and prints the events, one JSON line each.
 *
 * ```sh
 * CHORUS_WEBHOOK_SECRET=... PORT=9000 deno run --allow-net --allow-env=CHORUS_WEBHOOK_SECRET,PORT examples/webhook_receiver.ts
 * deno task start --webhook-url http://127.0.0.1:9000/ --webhook-secret ...
 * ```
 *
 * A request whose signature does not verify (a wrong secret, a replay more than 5 minutes old)
 * gets 401, which chorus retries; a verified one gets 204. `tests/webhook_receivers_test.ts`
 * runs it against a real chorus.
 * @module
 */

/** Whether a request is chorus' own: its signature verifies and its timestamp is fresh. */
export async function verify(secret: string, ts: string, body: string, sig: string) {
  const hmac = { name: "HMAC", hash: "SHA-256" }, enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), hmac, false, ["verify"]);
  const mac = Uint8Array.fromHex(/^sha256=([0-9a-f]{64})$/.exec(sig)?.[1] ?? "");
  const fresh = Math.abs(Date.now() - Number(ts)) < 5 * 60_000; // refuse replays
  return fresh && await crypto.subtle.verify(hmac, key, mac, enc.encode(`${ts}.${body}`));
}

if (import.meta.main) {
  const secret = Deno.env.get("CHORUS_WEBHOOK_SECRET") ?? "";
  const port = Number(Deno.env.get("PORT") ?? 9000);
  Deno.serve({
    port,
    hostname: "127.0.0.1",
    onListen: (addr) => console.log(`webhook receiver listening on ${addr.port}`),
  }, async (req) => {
    const body = await req.text();
    const timestamp = req.headers.get("x-chorus-timestamp") ?? "";
    const signature = req.headers.get("x-chorus-signature") ?? "";
    if (!(await verify(secret, timestamp, body, signature))) {
      console.log(`refused ${req.headers.get("x-chorus-delivery")}`);
      return new Response(null, { status: 401 });
    }
    for (const event of JSON.parse(body).events) console.log(JSON.stringify(event));
    return new Response(null, { status: 204 });
  });
}
