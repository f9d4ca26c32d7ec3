/**
 * The signature on every request chorus makes to the application (webhooks, the connect hook,
 * the moderation hook): `X-Chorus-Signature: sha256=HEX`, the HMAC-SHA256 of
 * `TIMESTAMP + "." + BODY` keyed with `--webhook-secret`, where TIMESTAMP is the
 * `X-Chorus-Timestamp` header (ms since the epoch). Signing the timestamp with the body lets a
 * receiver refuse a replayed request. `docs/hooks.md` has the recipe for receivers.
 * @module
 */

const encoder = new TextEncoder();

/** The key of `secret`, imported once per secret by whoever signs or verifies many requests. */
export function signingKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/** The `X-Chorus-Signature` value of `body` sent at `timestamp` (ms): `sha256=HEX`. */
export async function sign(key: CryptoKey, timestamp: number, body: string): Promise<string> {
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`));
  return "sha256=" + Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

/**
 * Whether `signature` is the one of `body` at `timestamp`. The comparison is
 * `crypto.subtle.verify`'s, which takes the same time wherever the first wrong byte is, so a
 * forger learns nothing from timing. For receivers written in TypeScript, and for the tests.
 */
export function verify(
  key: CryptoKey,
  timestamp: string,
  body: string,
  signature: string,
): Promise<boolean> {
  const hex = /^sha256=([0-9a-f]{64})$/.exec(signature)?.[1];
  if (hex === undefined) return Promise.resolve(false);
  const mac = new Uint8Array(32);
  for (let i = 0; i < 32; i++) mac[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return crypto.subtle.verify("HMAC", key, mac, encoder.encode(`${timestamp}.${body}`));
}
