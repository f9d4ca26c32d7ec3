/** The signature on requests to the application, checked by recomputing it by hand. */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { sign, signingKey, verify } from "../src/signing.ts";

const SECRET = "s3cret-".repeat(5);

Deno.test("the signature is sha256= the hex HMAC-SHA256 of TIMESTAMP.BODY", async () => {
  const body = '{"events":[{"type":"room.occupied","room":"/lobby","ts":1}]}';
  const signature = await sign(await signingKey(SECRET), 1764580000000, body);
  const expected = createHmac("sha256", SECRET).update(`1764580000000.${body}`).digest("hex");
  assert.equal(signature, `sha256=${expected}`);
});

Deno.test("verify accepts the right signature and refuses a wrong secret, body or timestamp", async () => {
  const key = await signingKey(SECRET);
  const signature = await sign(key, 42, "{}");
  assert.equal(await verify(key, "42", "{}", signature), true);
  assert.equal(await verify(await signingKey(SECRET + "x"), "42", "{}", signature), false);
  assert.equal(await verify(key, "42", "{ }", signature), false);
  assert.equal(await verify(key, "43", "{}", signature), false);
  assert.equal(await verify(key, "42", "{}", signature.toUpperCase()), false);
  assert.equal(await verify(key, "42", "{}", "sha256=abc"), false);
});
