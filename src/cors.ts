/**
 * Cross-origin access to event streams and their POSTs, for pages on origins
 * `--allowed-origins` lets in: the same origin rule as WebSocket upgrades, then the CORS
 * headers that let such a page read the answers, and the preflight a POST with
 * `Authorization` needs.
 * @module
 */
import { originAllowed } from "./upgrade.ts";

/** How long a browser may reuse a preflight's answer, in seconds. */
export const PREFLIGHT_MAX_AGE = 600;

/**
 * The CORS headers of an answer to `req`: none without an `Origin`, the origin echoed back
 * when it may connect, null when it may not (the request is then refused with 403).
 */
export function corsHeaders(
  req: Request,
  allowed: string[] | "*",
): Record<string, string> | null {
  if (!originAllowed(req, allowed)) return null;
  const origin = req.headers.get("origin");
  if (origin === null) return {};
  return { "access-control-allow-origin": origin, vary: "origin" };
}

/** `res` with `headers` added; answers built here have mutable headers. */
export function withHeaders(res: Response, headers: Record<string, string>): Response {
  for (const [name, value] of Object.entries(headers)) res.headers.set(name, value);
  return res;
}

/** The answer to a preflight (`OPTIONS /ROOM`) from an origin that may connect. */
export function preflight(cors: Record<string, string>): Response {
  return new Response(null, {
    status: 204,
    headers: {
      ...cors,
      "access-control-allow-methods": "GET, POST",
      "access-control-allow-headers": "authorization, content-type, last-event-id",
      "access-control-max-age": String(PREFLIGHT_MAX_AGE),
    },
  });
}
