/**
 * One signed request to the application, as every hook makes it: a JSON body POSTed with
 * `X-Chorus-Timestamp` and `X-Chorus-Signature` (`src/signing.ts`), bounded in time by a
 * timeout and in memory by {@link MAX_HOOK_RESPONSE_BYTES}, so a slow or hostile application
 * can neither hold chorus up nor fill its memory.
 * @module
 */
import { concatChunks } from "./http.ts";
import { sign } from "./signing.ts";

/** Largest answer read from the application; a longer one counts as a failed request. */
export const MAX_HOOK_RESPONSE_BYTES = 64 * 1024;

/** The application's answer: its status and its body parsed as JSON (undefined if not JSON). */
export interface HookAnswer {
  status: number;
  body: unknown;
}

/** Why a request got no answer; logged and, for webhooks, retried. */
export class HookError extends Error {
  override name = "HookError";
  /** `timeout`, `network` (refused, reset, DNS) or `too_large` (answer over the bound). */
  readonly kind: "timeout" | "network" | "too_large";
  constructor(kind: HookError["kind"], message: string) {
    super(message);
    this.kind = kind;
  }
}

/** What one request needs. */
export interface HookRequest {
  url: string;
  /**
   * The signing key (`signingKey(--webhook-secret)`), or its promise: an app built
   * synchronously imports it once and passes the same promise to every request.
   */
  key: CryptoKey | Promise<CryptoKey>;
  /** The JSON body, already serialised: it is what is signed. */
  body: string;
  timeoutMs: number;
  /** Extra headers, such as `X-Chorus-Delivery`. */
  headers?: Record<string, string>;
  /** Clock for the timestamp; injectable for tests. */
  now?: () => number;
}

/**
 * POST a signed request and read the answer. Throws {@link HookError} when there is none in
 * time, the connection fails or the answer is too large; any status is an answer.
 */
export async function postSigned(request: HookRequest): Promise<HookAnswer> {
  const ts = (request.now ?? Date.now)();
  const signal = AbortSignal.timeout(request.timeoutMs);
  let res: Response;
  try {
    res = await fetch(request.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": "chorus-hooks/1",
        "x-chorus-timestamp": String(ts),
        "x-chorus-signature": await sign(await request.key, ts, request.body),
        ...request.headers,
      },
      body: request.body,
      // A redirect is an answer, not a new place to send the signed body to.
      redirect: "manual",
      signal,
    });
  } catch (err) {
    throw failure(err, signal, request);
  }
  let text: string;
  try {
    text = await readText(res);
  } catch (err) {
    if (err instanceof HookError) throw err;
    throw failure(err, signal, request);
  }
  let body: unknown;
  try {
    body = text === "" ? undefined : JSON.parse(text);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    body = undefined;
  }
  return { status: res.status, body };
}

/** The answer's text, or a {@link HookError} as soon as it passes the bound. */
async function readText(res: Response): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.byteLength;
    if (size > MAX_HOOK_RESPONSE_BYTES) {
      throw new HookError("too_large", `answer over ${MAX_HOOK_RESPONSE_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new TextDecoder().decode(concatChunks(chunks, size));
}

function failure(err: unknown, signal: AbortSignal, request: HookRequest): HookError {
  if (signal.aborted) {
    return new HookError("timeout", `no answer within ${request.timeoutMs} ms`);
  }
  if (err instanceof TypeError) return new HookError("network", err.message);
  throw err;
}
