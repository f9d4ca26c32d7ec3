/**
 * The browser client, embedded in the program with text imports, so neither `deno run` nor
 * the compiled binary needs file-system permission to serve it.
 * @module
 */
import indexHtml from "../static/index.html" with { type: "text" };
import appJs from "../static/app.js" with { type: "text" };
import styleCss from "../static/style.css" with { type: "text" };
import chorusJs from "../static/chorus.js" with { type: "text" };
import adminHtml from "../static/admin.html" with { type: "text" };
import adminJs from "../static/admin.js" with { type: "text" };
import adminCss from "../static/admin.css" with { type: "text" };
import adminApiJs from "../static/admin/api.js" with { type: "text" };
import adminChartsJs from "../static/admin/charts.js" with { type: "text" };
import adminControlsJs from "../static/admin/controls.js" with { type: "text" };
import adminDetailJs from "../static/admin/detail.js" with { type: "text" };
import adminDomJs from "../static/admin/dom.js" with { type: "text" };
import adminFormatJs from "../static/admin/format.js" with { type: "text" };
import adminLoginJs from "../static/admin/login.js" with { type: "text" };
import adminMembersJs from "../static/admin/members.js" with { type: "text" };
import adminOverviewJs from "../static/admin/overview.js" with { type: "text" };
import adminRoomJs from "../static/admin/room.js" with { type: "text" };
import adminRoomsJs from "../static/admin/rooms.js" with { type: "text" };
import adminStatusJs from "../static/admin/status.js" with { type: "text" };
import adminStreamJs from "../static/admin/stream.js" with { type: "text" };
import { httpError } from "./http.ts";

/** One embedded file, ready to serve. */
export interface Asset {
  readonly body: Uint8Array<ArrayBuffer>;
  readonly contentType: string;
  readonly etag: string;
  /** Headers that replace the page's defaults for this file (`cache-control`, CORS). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** URL prefix of the page's assets; every other path serves the page itself. */
export const ASSET_PREFIX = "/_static/";

/** Security headers for every static response: the page runs only its own script. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "content-security-policy": "default-src 'self'; connect-src 'self' ws: wss:; " +
    "img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; " +
    "frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // Assets are not content-addressed, so browsers revalidate every time and get a 304.
  "cache-control": "no-cache",
});

const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";

function asset(
  text: string,
  contentType: string,
  headers?: Readonly<Record<string, string>>,
): Asset {
  const body = new TextEncoder().encode(text);
  const etag = `"${fnv1a(body).toString(16)}-${body.length.toString(16)}"`;
  return headers ? { body, contentType, etag, headers } : { body, contentType, etag };
}

/** 32-bit FNV-1a: a cheap, stable fingerprint for ETags (not for security). */
function fnv1a(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (const b of bytes) hash = Math.imul(hash ^ b, 0x01000193);
  return hash >>> 0;
}

/** The chat page, served for every path that is not an asset. */
export const PAGE: Asset = asset(indexHtml, "text/html; charset=utf-8");

/**
 * The chat page for a server mounted under `basePath` (`/ws`): its asset links point under the
 * base, and a `chorus-base` meta tag tells the script which part of its URL is the base rather
 * than the room. `basePath` must be normalised (`/a/b`, no trailing slash, no quotes or `<`).
 */
export function pageAt(basePath: string): Asset {
  if (basePath === "") return PAGE;
  return asset(underBasePath(indexHtml, basePath), PAGE.contentType);
}

/** `html` with its asset links under `basePath` and the `chorus-base` meta tag added. */
function underBasePath(html: string, basePath: string): string {
  if (basePath === "") return html;
  return html
    .replaceAll(`"${ASSET_PREFIX}`, `"${basePath}${ASSET_PREFIX}`)
    .replace("<head>", `<head>\n    <meta name="chorus-base" content="${basePath}">`);
}

/** Where the operator's page is served (under the base path), only with `--api-key`. */
export const ADMIN_PATH = "/admin";

/**
 * Headers of the operator's page, over {@link PAGE_HEADERS}: nothing but its own script, style
 * and API calls, never framed, never cached (it is a page behind a key), no referrer.
 */
export const ADMIN_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; " +
    "form-action 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
});

/**
 * The handler of `GET /admin` for a server under `basePath`: 404 when `enabled` is false (no
 * API key, so the page could do nothing; its existence is not revealed), 403 for a request a
 * browser made from another site or origin, else the page.
 */
export function adminPage(basePath: string, enabled: boolean): (req: Request) => Response {
  const page = asset(
    underBasePath(adminHtml, basePath),
    "text/html; charset=utf-8",
    ADMIN_HEADERS,
  );
  return (req) => {
    if (!enabled) return httpError(404, "not_found", "not found");
    if (fromElsewhere(req)) {
      return httpError(
        403,
        "forbidden_origin",
        "the operator page is served to its own origin only",
        {
          "cache-control": "no-store",
        },
      );
    }
    return serveAsset(req, page);
  };
}

/**
 * True when a browser says the request comes from another site or origin: `Sec-Fetch-Site`
 * other than `same-origin` or `none` (typed, bookmarked), or an `Origin` whose host is not
 * the request's `Host`. Requests without either header (curl, old browsers) pass; the page
 * holds nothing secret, and its CSP and `X-Frame-Options` forbid framing anyway.
 */
export function fromElsewhere(req: Request): boolean {
  const site = req.headers.get("sec-fetch-site");
  if (site !== null && site !== "same-origin" && site !== "none") return true;
  const origin = req.headers.get("origin");
  if (origin === null) return false;
  if (!URL.canParse(origin)) return true; // "null": a sandboxed frame, a file: page
  return new URL(origin).host !== (req.headers.get("host") ?? new URL(req.url).host);
}

/** Assets by their path under {@link ASSET_PREFIX}. */
export const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ["app.js", asset(appJs, JS)],
  ["style.css", asset(styleCss, CSS)],
  ["admin.js", asset(adminJs, JS)],
  ["admin.css", asset(adminCss, CSS)],
  // The admin page's modules, which admin.js imports by relative paths.
  ["admin/api.js", asset(adminApiJs, JS)],
  ["admin/charts.js", asset(adminChartsJs, JS)],
  ["admin/controls.js", asset(adminControlsJs, JS)],
  ["admin/detail.js", asset(adminDetailJs, JS)],
  ["admin/dom.js", asset(adminDomJs, JS)],
  ["admin/format.js", asset(adminFormatJs, JS)],
  ["admin/login.js", asset(adminLoginJs, JS)],
  ["admin/members.js", asset(adminMembersJs, JS)],
  ["admin/overview.js", asset(adminOverviewJs, JS)],
  ["admin/room.js", asset(adminRoomJs, JS)],
  ["admin/rooms.js", asset(adminRoomsJs, JS)],
  ["admin/status.js", asset(adminStatusJs, JS)],
  ["admin/stream.js", asset(adminStreamJs, JS)],
]);

/** Where chorus serves its client library, {@link CLIENT_LIBRARY}. */
export const CLIENT_LIBRARY_PATH = "/chorus.js";

/**
 * `static/chorus.js`, the client library, for applications to import from the server they
 * connect to. Cached for 5 minutes (then revalidated with its ETag), and readable from any
 * origin: a module script on another origin is fetched with CORS, and the file holds nothing
 * private.
 */
export const CLIENT_LIBRARY: Asset = asset(chorusJs, JS, {
  "cache-control": "public, max-age=300",
  "access-control-allow-origin": "*",
});

/**
 * Serve an embedded file for a GET or HEAD, honouring `If-None-Match` with 304.
 * `req` supplies the method and validators; the body is omitted for HEAD.
 */
export function serveAsset(req: Request, file: Asset): Response {
  const headers = new Headers(PAGE_HEADERS);
  for (const [name, value] of Object.entries(file.headers ?? {})) headers.set(name, value);
  headers.set("etag", file.etag);
  const ifNoneMatch = req.headers.get("if-none-match");
  if (ifNoneMatch !== null && etagMatches(ifNoneMatch, file.etag)) {
    return new Response(null, { status: 304, headers });
  }
  headers.set("content-type", file.contentType);
  headers.set("content-length", String(file.body.byteLength));
  return new Response(req.method === "HEAD" ? null : file.body, { headers });
}

function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === "*") return true;
  return header.split(",").some((t) => t.trim().replace(/^W\//, "") === etag);
}
