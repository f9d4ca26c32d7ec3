/**
 * A connect hook as an application writes one: chorus asks it about each connection, and it
 * admits the users of its own session cookie, with their id and name, and keeps `/admin/*`
 * rooms to admins. `docs/hooks.md` explains it; `tests/connect_hook_test.ts` runs it against a
 * real chorus.
 *
 * ```sh
 * CHORUS_WEBHOOK_SECRET=a-secret-of-at-least-32-characters PORT=8001 \
 *   deno run --allow-net --allow-env=PORT,CHORUS_WEBHOOK_SECRET examples/connect_hook_app.ts
 * deno task start --connect-hook-url http://127.0.0.1:8001/chorus/connect \
 *   --webhook-secret a-secret-of-at-least-32-characters
 * ```
 *
 * Its one demo session is the cookie `session=demo-ada`.
 * @module
 */

/** A user as the application's session store knows them. */
export interface User {
  id: string;
  name: string;
  admin: boolean;
}

/** Finds the user of a session id; a real application reads its own session store. */
export type Sessions = (session: string) => User | undefined;

const encoder = new TextEncoder();

/** Whether chorus signed `body` (the recipe of docs/hooks.md) less than 5 minutes ago. */
async function signedByChorus(req: Request, body: string, key: CryptoKey): Promise<boolean> {
  const ts = req.headers.get("x-chorus-timestamp") ?? "";
  const hex = /^sha256=([0-9a-f]{64})$/.exec(req.headers.get("x-chorus-signature") ?? "")?.[1];
  if (hex === undefined || !(Math.abs(Date.now() - Number(ts)) < 5 * 60_000)) return false;
  const mac = Uint8Array.from(hex.match(/../g)!, (byte) => parseInt(byte, 16));
  return await crypto.subtle.verify("HMAC", key, mac, encoder.encode(`${ts}.${body}`));
}

/** The connect hook: allow a known session with its identity, refuse everyone else. */
export function connectHook(
  secret: string,
  sessions: Sessions,
): (req: Request) => Promise<Response> {
  const key = crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  return async (req) => {
    const body = await req.text();
    if (!await signedByChorus(req, body, await key)) {
      return new Response("not signed by chorus", { status: 401 });
    }
    const { room, headers } = JSON.parse(body);
    const session = /(?:^|;\s*)session=([^;]+)/.exec(headers.cookie ?? "")?.[1];
    const user = session === undefined ? undefined : sessions(session);
    const refuse = (reason: string) => Response.json({ allow: false, reason }, { status: 403 });
    if (user === undefined) return refuse("please log in first");
    if (room.startsWith("/admin/") && !user.admin) return refuse("admins only");
    return Response.json({ allow: true, id: user.id, name: user.name, nameLocked: true });
  };
}

if (import.meta.main) {
  const secret = Deno.env.get("CHORUS_WEBHOOK_SECRET");
  if (secret === undefined) throw new Error("set CHORUS_WEBHOOK_SECRET, as for chorus");
  const demo = new Map([["demo-ada", { id: "ada", name: "Ada", admin: true }]]);
  const hook = connectHook(secret, (session) => demo.get(session));
  Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8001) }, (req) => {
    const { pathname } = new URL(req.url);
    if (req.method === "POST" && pathname === "/chorus/connect") return hook(req);
    return new Response("not found", { status: 404 });
  });
}
