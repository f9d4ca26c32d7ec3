/**
 * Who may connect where and who may publish: JWT verification for WebSocket upgrades (an
 * HS256 secret or an RS256/ES256 public key, through `jose`), the room patterns a token may
 * carry, minting tokens for `main.ts token`, and the constant-time compare of the API key.
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import * as jose from "jose";
import { checkName, hasControlCharacters } from "./protocol.ts";

/** The signature algorithms chorus accepts; one per key, never chosen by the token. */
export type JwtAlgorithm = "HS256" | "RS256" | "ES256";

/** Longest room path accepted in a pattern or an API call, in characters. */
export const MAX_ROOM_LENGTH = 1024;

/** Longest `sub` claim, in characters; it becomes a member id every client stores. */
export const MAX_SUB_LENGTH = 128;

const encoder = new TextEncoder();

/**
 * Compare a presented secret with the expected one in constant time, so response timing
 * cannot reveal how much of a guess was right. Both sides are hashed first, which also hides
 * the expected length.
 */
export function constantTimeEqual(presented: string, expected: string): boolean {
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * Normalise a room path the way the server sees a connection's URL path (`/café` becomes
 * `/caf%C3%A9`), or null when it is not one: it must start with a single `/`, have no query,
 * fragment, backslash, control character or dot segment.
 */
export function parseRoom(raw: string): string | null {
  if (!raw.startsWith("/") || raw.startsWith("//") || raw.length > MAX_ROOM_LENGTH) return null;
  if (/[?#\\]/.test(raw) || hasControlCharacters(raw)) return null;
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    return null; // a broken percent escape names no room a client could connect to
  }
  if (decoded.split("/").some((seg) => seg === "." || seg === "..")) return null;
  return new URL(raw, "http://chorus.invalid").pathname;
}

/**
 * Parse one entry of a token's `rooms` claim: an exact room path (`/lobby`), or a prefix
 * ending in `/*` (`/stocks/*` allows `/stocks/acme` and deeper, not `/stocks` itself).
 * Returns the normalised pattern, or null when it is neither.
 */
export function parseRoomPattern(raw: string): string | null {
  if (raw.endsWith("/*")) {
    const prefix = parseRoom(raw.slice(0, -1));
    return prefix === null ? null : `${prefix}*`;
  }
  return parseRoom(raw);
}

/** Whether normalised `patterns` let a connection into `room`; no list allows every room. */
export function roomAllowed(patterns: readonly string[] | undefined, room: string): boolean {
  if (patterns === undefined) return true;
  return patterns.some((p) => p.endsWith("/*") ? room.startsWith(p.slice(0, -1)) : room === p);
}

/**
 * Parse a list of room patterns (a token's `rooms` claim, the connect hook's `rooms`): the
 * normalised patterns, or a message saying which entry is not one.
 */
export function parseRoomPatterns(raw: unknown): string[] | string {
  if (!Array.isArray(raw)) return "must be a list of room patterns";
  const patterns: string[] = [];
  for (const entry of raw) {
    const pattern = typeof entry === "string" ? parseRoomPattern(entry) : null;
    if (pattern === null) return `${JSON.stringify(entry)} is not a room pattern`;
    patterns.push(pattern);
  }
  return patterns;
}

/** What {@link isMemberId} requires, for messages: "must be 1–128 characters …". */
export const MEMBER_ID_RULE = `must be 1–${MAX_SUB_LENGTH} characters without control characters`;

/**
 * Whether `id` may be a member id (a token's `sub`, the connect hook's `id`): every client
 * stores and shows it, so it is bounded and free of control characters.
 */
export function isMemberId(id: unknown): id is string {
  return typeof id === "string" && id !== "" && id.length <= MAX_SUB_LENGTH &&
    !hasControlCharacters(id);
}

/** What a valid token grants one connection. */
export interface Grant {
  /** The `sub` claim, which becomes the member id; a generated id when absent. */
  sub: string | undefined;
  /** The `name` claim: the display name, which the member then may not change. */
  name: string | undefined;
  /** Normalised room patterns from the `rooms` claim; undefined allows every room. */
  rooms: string[] | undefined;
  /** When the token stops being valid (`exp` plus the clock skew), in ms since the epoch. */
  expiresAt: number | undefined;
}

/** Why a token was refused; logged with each refusal, so operators can tell the cases apart. */
export type TokenRefusal =
  | "missing"
  | "malformed"
  | "bad_signature"
  | "bad_algorithm"
  | "expired"
  | "not_yet_valid"
  | "bad_claims";

/** The verdict on one token. */
export type TokenCheck =
  | { ok: true; grant: Grant }
  | { ok: false; reason: TokenRefusal; message: string };

/** Checks a connection token; built once per server by {@link createVerifier}. */
export type Verifier = (token: string) => Promise<TokenCheck>;

/** A PEM that is not a usable public key; `main.ts` reports it and exits 2. */
export class KeyError extends Error {
  override name = "KeyError";
}

/** A public key as `jose` imports it (its `CryptoKey`, whichever typings define that). */
type PublicKey = Awaited<ReturnType<typeof jose.importSPKI>>;

/** A verification key and the one algorithm it may be used with. */
export interface VerifyKey {
  key: PublicKey | Uint8Array;
  alg: JwtAlgorithm;
}

/** Smallest RSA modulus accepted, in bits; `jose` refuses smaller RS256 keys. */
const MIN_RSA_BITS = 2048;

/**
 * Import a PEM public key (`-----BEGIN PUBLIC KEY-----`) as RS256 (RSA, 2048 bits or more)
 * or ES256 (EC P-256). Throws {@link KeyError} with a one-line reason for anything else.
 */
export async function loadPublicKey(pem: string): Promise<VerifyKey> {
  if (pem.includes("PRIVATE KEY-----")) {
    throw new KeyError("this is a private key; give the public key (openssl pkey -pubout)");
  }
  if (!pem.includes("-----BEGIN PUBLIC KEY-----")) {
    throw new KeyError("expected a PEM public key (-----BEGIN PUBLIC KEY-----)");
  }
  for (const alg of ["RS256", "ES256"] as const) {
    let key: PublicKey;
    try {
      key = await jose.importSPKI(pem, alg);
    } catch (err) {
      if (!(err instanceof DOMException || err instanceof TypeError)) throw err;
      continue; // not a key of this algorithm's type: try the next one
    }
    // jose's CryptoKey type depends on which typings are loaded (Node's or the DOM's): read
    // the modulus length structurally.
    const bits = (key as unknown as { algorithm: { modulusLength?: number } }).algorithm
      .modulusLength ?? 0;
    if (alg === "RS256" && bits < MIN_RSA_BITS) {
      throw new KeyError(`RSA key has ${bits} bits; at least ${MIN_RSA_BITS} are required`);
    }
    return { key, alg };
  }
  throw new KeyError("not an RSA or EC P-256 public key (RS256 or ES256)");
}

/** How connection tokens are checked; all of it comes from the `--jwt-*` flags. */
export interface VerifierOptions {
  /** The HS256 secret, or the PEM text of an RS256/ES256 public key. */
  key: { secret: string } | { publicKeyPem: string };
  /** Required `aud` claim, when set. */
  audience?: string | undefined;
  /** Required `iss` claim, when set. */
  issuer?: string | undefined;
  /** Seconds of clock difference tolerated on `exp` and `nbf`. */
  clockSkew: number;
  /** Clock in ms since the epoch. */
  now?: () => number;
}

/** Build the {@link Verifier} of one server. A public key is imported on first use. */
export function createVerifier(options: VerifierOptions): Verifier {
  const { audience, issuer, clockSkew } = options;
  const now = options.now ?? Date.now;
  const source = options.key;
  let loaded: Promise<VerifyKey> | undefined;
  const verifyKey = () =>
    loaded ??= "secret" in source
      ? Promise.resolve({ key: encoder.encode(source.secret), alg: "HS256" })
      : loadPublicKey(source.publicKeyPem);
  return async (token) => {
    const { key, alg } = await verifyKey();
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, key, {
        algorithms: [alg],
        ...(audience === undefined ? {} : { audience }),
        ...(issuer === undefined ? {} : { issuer }),
        clockTolerance: clockSkew,
        currentDate: new Date(now()),
      }));
    } catch (err) {
      if (!(err instanceof jose.errors.JOSEError)) throw err;
      return refusal(err);
    }
    return readClaims(payload, clockSkew);
  };
}

function refusal(err: jose.errors.JOSEError): TokenCheck {
  const refuse = (reason: TokenRefusal, message: string): TokenCheck => ({
    ok: false,
    reason,
    message,
  });
  if (err instanceof jose.errors.JWTExpired) return refuse("expired", "token expired");
  if (err instanceof jose.errors.JWTClaimValidationFailed) {
    if (err.claim === "nbf" && err.reason === "check_failed") {
      return refuse("not_yet_valid", "token not yet valid");
    }
    return refuse("bad_claims", `token claim "${err.claim}" is not accepted`);
  }
  if (err instanceof jose.errors.JWSSignatureVerificationFailed) {
    return refuse("bad_signature", "token signature is invalid");
  }
  if (err instanceof jose.errors.JOSEAlgNotAllowed) {
    return refuse("bad_algorithm", "token algorithm is not accepted");
  }
  return refuse("malformed", "token is malformed");
}

function readClaims(payload: jose.JWTPayload, clockSkew: number): TokenCheck {
  const bad = (message: string): TokenCheck => ({ ok: false, reason: "bad_claims", message });
  const { name, rooms, exp } = payload;
  const sub: unknown = payload.sub;
  if (sub !== undefined && !isMemberId(sub)) return bad(`"sub" ${MEMBER_ID_RULE}`);
  let displayName: string | undefined;
  if (name !== undefined) {
    if (typeof name !== "string") return bad(`"name" must be a string`);
    const check = checkName(name);
    if (!check.ok) return bad(`"name": ${check.message}`);
    displayName = check.name;
  }
  let patterns: string[] | undefined;
  if (rooms !== undefined) {
    const list = parseRoomPatterns(rooms);
    if (typeof list === "string") return bad(`"rooms": ${list}`);
    patterns = list;
  }
  return {
    ok: true,
    grant: {
      sub,
      name: displayName,
      rooms: patterns,
      expiresAt: exp === undefined ? undefined : (exp + clockSkew) * 1000,
    },
  };
}

/** What `main.ts token` signs. */
export interface MintOptions {
  /** The HS256 secret the server verifies with. */
  secret: string;
  /** The member id. */
  sub: string;
  /** A fixed display name, when set. */
  name?: string | undefined;
  /** Room patterns the token may join; every room when absent. */
  rooms?: string[] | undefined;
  /** Seconds from now until the token expires. */
  ttlSeconds: number;
  /** `aud` claim, to match `--jwt-audience`. */
  audience?: string | undefined;
  /** `iss` claim, to match `--jwt-issuer`. */
  issuer?: string | undefined;
  /** Clock in ms since the epoch. */
  now?: () => number;
}

/** Sign an HS256 connection token, for tests and small deployments without an issuer. */
export async function mintToken(options: MintOptions): Promise<string> {
  const iat = Math.floor((options.now ?? Date.now)() / 1000);
  const claims: jose.JWTPayload = {};
  if (options.name !== undefined) claims.name = options.name;
  if (options.rooms !== undefined) claims.rooms = options.rooms;
  const jwt = new jose.SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(options.sub)
    .setIssuedAt(iat)
    .setExpirationTime(iat + options.ttlSeconds);
  if (options.audience !== undefined) jwt.setAudience(options.audience);
  if (options.issuer !== undefined) jwt.setIssuer(options.issuer);
  return await jwt.sign(encoder.encode(options.secret));
}
