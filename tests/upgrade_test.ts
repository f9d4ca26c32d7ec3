/** Upgrade checks and the refusal table, in-process with `new Request(...)`: no sockets. */
import assert from "node:assert/strict";
import type { Verifier } from "../src/auth.ts";
import {
  type Admitted,
  checkUpgrade,
  refusalResponse,
  REFUSALS,
  type Refused,
  type UpgradeChecks,
} from "../src/upgrade.ts";
import { UPGRADE_HEADERS } from "./helpers.ts";

const open: UpgradeChecks = { config: { allowedOrigins: [] }, verify: undefined };

function request(path = "/r", headers: Record<string, string> = {}, method = "GET"): Request {
  return new Request(`http://chorus.test${path}`, {
    method,
    headers: { host: "chorus.test", ...UPGRADE_HEADERS, ...headers },
  });
}

async function check(req: Request, checks = open): Promise<Admitted | Refused> {
  return await checkUpgrade(checks, req, new URL(req.url).pathname, "192.0.2.1");
}

Deno.test("each malformed upgrade is refused by its own entry of the table", async () => {
  const cases: [Request, string][] = [
    [request("/r", {}, "POST"), "not_get"],
    [request("/r", { "sec-websocket-version": "8" }), "bad_version"],
    [request("/r", { "sec-websocket-key": "" }), "no_key"],
    [request("/r", { origin: "https://evil.example" }), "bad_origin"],
    [request("/r", { origin: "null" }), "bad_origin"],
    [request("/r", { "sec-websocket-protocol": "mqtt" }), "bad_protocol"],
    [request("/r?name=%20"), "bad_name"],
  ];
  for (const [req, kind] of cases) {
    const checked = await check(req);
    assert.ok("refused" in checked, kind);
    assert.equal(checked.refused, kind);
  }
});

Deno.test("an upgrade that passes is admitted with its room, mode, name and position", async () => {
  const checked = await check(
    request("/lobby?name=%20Ann%20&since=n1-5", {
      origin: "http://chorus.test",
      "sec-websocket-protocol": "chorus.v1",
    }),
  );
  assert.deepEqual(checked, {
    room: "/lobby",
    mode: "chat",
    name: "Ann",
    resume: { since: "n1-5" },
    grant: undefined,
    nameLocked: false,
  });
  const listed = await check(request("/r", { origin: "https://app.example" }), {
    config: { allowedOrigins: ["https://app.example"] },
    verify: undefined,
  });
  assert.ok(!("refused" in listed), "a listed origin passes");
});

Deno.test("with a verifier: no token, a bad token and a foreign room are refused; a grant admits", async () => {
  const verify: Verifier = (token) =>
    Promise.resolve(
      token === "good"
        ? { ok: true, grant: { sub: "u1", name: "Uma", rooms: ["/mine"], expiresAt: undefined } }
        : { ok: false, reason: "bad_signature", message: "signature verification failed" },
    );
  const checks = { ...open, verify };
  assert.equal((await check(request("/mine"), checks) as Refused).refused, "no_token");
  const bad = await check(request("/mine?token=bad"), checks) as Refused;
  assert.equal(bad.refused, "bad_token");
  assert.equal(bad.message, "signature verification failed");
  const foreign = await check(request("/other?token=good"), checks) as Refused;
  assert.equal(foreign.refused, "forbidden_room");
  const ok = await check(request("/mine?token=good&name=Bob"), checks) as Admitted;
  assert.equal(ok.name, "Uma", "the token's name wins over ?name=");
  assert.equal(ok.nameLocked, true, "and may not be changed");
  assert.equal(ok.grant?.sub, "u1");
});

Deno.test("a refusal's response carries its status, code, headers and Retry-After", async () => {
  for (const [kind, r] of Object.entries(REFUSALS)) {
    const res = refusalResponse({ refused: kind as keyof typeof REFUSALS });
    assert.equal(res.status, r.status, kind);
    assert.deepEqual(await res.json(), { error: { code: r.code, message: r.message } });
    const retryAfter = "retryAfter" in r ? String(r.retryAfter) : null;
    assert.equal(res.headers.get("retry-after"), retryAfter, kind);
    for (const [name, value] of Object.entries("headers" in r ? r.headers : {})) {
      assert.equal(res.headers.get(name), value, `${kind}: ${name}`);
    }
  }
  const precise = refusalResponse({ refused: "bad_name", message: "name is too long" });
  assert.equal((await precise.json()).error.message, "name is too long");
});

Deno.test("docs/protocol.md lists the status and code of every refusal", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/protocol.md", import.meta.url));
  const rows = new Set(
    [...doc.matchAll(/^\| (\d{3}) +\| `([a-z_]+)` +\|/gm)].map((m) => `${m[1]} ${m[2]}`),
  );
  for (const [kind, r] of Object.entries(REFUSALS)) {
    assert.ok(rows.has(`${r.status} ${r.code}`), `${kind}: ${r.status} ${r.code}`);
  }
});
