/** One signed request to a real receiver: headers, answers, timeouts and oversized answers. */
import assert from "node:assert/strict";
import { HookError, MAX_HOOK_RESPONSE_BYTES, postSigned } from "../src/hook_client.ts";
import { signingKey } from "../src/signing.ts";
import { signedWith, startReceiver } from "./hook_receiver.ts";
import { freePort } from "./helpers.ts";

const SECRET = "k".repeat(32);

Deno.test("postSigned POSTs the body signed, with extra headers, and parses the JSON answer", async () => {
  const receiver = startReceiver(() => Response.json({ allow: true }, { status: 403 }));
  try {
    const answer = await postSigned({
      url: receiver.url("/connect"),
      key: await signingKey(SECRET),
      body: '{"room":"/a"}',
      timeoutMs: 2000,
      headers: { "x-chorus-delivery": "d-1" },
    });
    assert.deepEqual(answer, { status: 403, body: { allow: true } });
    const req = await receiver.requests.next("request");
    assert.equal(req.path, "/connect");
    assert.equal(req.text, '{"room":"/a"}');
    assert.equal(req.headers.get("content-type"), "application/json");
    assert.equal(req.headers.get("x-chorus-delivery"), "d-1");
    assert.ok(await signedWith(req, SECRET));
    assert.equal(await signedWith(req, "x".repeat(32)), false);
  } finally {
    await receiver.close();
  }
});

Deno.test("postSigned fails with a HookError on a timeout, a refused connection or a huge answer", async () => {
  const key = await signingKey(SECRET);
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  const receiver = startReceiver(async (req) => {
    if (req.path === "/slow") await held;
    return new Response("x".repeat(MAX_HOOK_RESPONSE_BYTES + 1));
  });
  try {
    const slow = postSigned({ url: receiver.url("/slow"), key, body: "{}", timeoutMs: 100 });
    await assert.rejects(slow, (err) => err instanceof HookError && err.kind === "timeout");
    release();
    const big = postSigned({ url: receiver.url("/big"), key, body: "{}", timeoutMs: 2000 });
    await assert.rejects(big, (err) => err instanceof HookError && err.kind === "too_large");
    const closed = `http://127.0.0.1:${await freePort()}/`;
    const refused = postSigned({ url: closed, key, body: "{}", timeoutMs: 2000 });
    await assert.rejects(refused, (err) => err instanceof HookError && err.kind === "network");
  } finally {
    await receiver.close();
  }
});

Deno.test("postSigned does not follow a redirect: the 3xx is the answer", async () => {
  const receiver = startReceiver((req) =>
    req.path === "/moved"
      ? new Response(null, { status: 302, headers: { location: "/elsewhere" } })
      : Response.json({ followed: true })
  );
  try {
    const key = await signingKey(SECRET);
    const answer = await postSigned({
      url: receiver.url("/moved"),
      key,
      body: "{}",
      timeoutMs: 2000,
    });
    assert.equal(answer.status, 302);
    assert.equal((await receiver.requests.next("request")).path, "/moved");
    assert.equal(receiver.count, 1);
  } finally {
    await receiver.close();
  }
});
