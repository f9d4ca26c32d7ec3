/**
 * HTTP building blocks every handler shares: the handler shape `Deno.serve` expects, JSON
 * responses, and the one JSON error shape with its stable codes.
 * @module
 */
import type { ErrorCode } from "./protocol.ts";

/** Connection details Deno passes next to the request; optional for in-process tests. */
export interface RequestInfo {
  remoteAddr?: Deno.Addr;
}

/** A request handler in the shape `Deno.serve` expects. */
export type Handler = (req: Request, info?: RequestInfo) => Response | Promise<Response>;

/** Stable codes of HTTP errors, carried in `{"error": {"code", "message"}}` bodies. */
export type HttpErrorCode =
  | "bad_request"
  | "invalid_name"
  | "invalid_resume"
  | "unsupported_protocol"
  | "unsupported_version"
  | "method_not_allowed"
  | "not_found"
  | "forbidden_origin"
  | "too_many_connections"
  | "invalid_token"
  | "forbidden_room"
  | "unauthorized"
  | "invalid_room"
  | "payload_too_large"
  | "unsupported_media_type"
  | "shutting_down"
  | "invalid_session"
  | "forbidden"
  | "hook_unavailable"
  | "invalid_id"
  | "invalid_reason"
  | "member_not_found"
  | "room_not_found";

/**
 * A JSON error response; every HTTP error chorus returns has this shape. A POSTed event that
 * is refused carries the code its `error` event would (`src/protocol.ts`).
 */
export function httpError(
  status: number,
  code: HttpErrorCode | ErrorCode,
  message: string,
  headers: HeadersInit = {},
): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify({ error: { code, message } }) + "\n", { status, headers: h });
}

/** A 200 JSON response that no cache keeps: live state such as `/healthz` and the API. */
export function json(body: unknown, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json; charset=utf-8");
  h.set("cache-control", "no-store");
  return new Response(JSON.stringify(body) + "\n", { headers: h });
}

/** The client's IP address, or `unknown` when Deno did not say (in-process tests). */
export function remoteIp(info: RequestInfo | undefined): string {
  const addr = info?.remoteAddr;
  return addr && (addr.transport === "tcp" || addr.transport === "udp") ? addr.hostname : "unknown";
}

/**
 * The request body, or null as soon as it is longer than `max` bytes: a declared
 * `Content-Length` over it is refused unread, and a streamed body is read no further.
 */
export async function readAtMost(
  req: Request,
  max: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > max) {
    await req.body?.cancel();
    return null;
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body ?? []) {
    size += chunk.byteLength;
    if (size > max) return null; // leaving the loop cancels the rest of the stream
    chunks.push(chunk);
  }
  return concatChunks(chunks, size);
}

/** The chunks of a body read piece by piece, as one array of `size` bytes. */
export function concatChunks(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.byteLength;
  }
  return all;
}
