/**
 * An application of its own with chorus embedded under `/ws` (`createChorus` with a base path),
 * on a free port, as the embedding and page tests use it.
 * @module
 */
import { type Chorus, type ChorusOptions, createChorus } from "../mod.ts";

/** The embedding app: its chorus, its origin, and WebSocket URLs on it. */
export interface Embedded {
  chorus: Chorus;
  /** `http://127.0.0.1:PORT` */
  origin: string;
  /** `ws://127.0.0.1:PORT` + path */
  ws: (path: string) => string;
  /** Shut chorus down, then the app's server. */
  close: () => Promise<void>;
}

/**
 * Start an app that hands `/ws` and everything under it to chorus (in memory, quiet, with
 * `options` over that) and answers every other path itself with `own route PATH`.
 */
export async function startEmbedded(options: ChorusOptions = {}): Promise<Embedded> {
  const chorus = await createChorus({
    basePath: "/ws",
    logLevel: "error",
    store: "memory",
    ...options,
  });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req, info) => {
    const { pathname } = new URL(req.url);
    if (pathname === "/ws" || pathname.startsWith("/ws/")) return chorus.handler(req, info);
    return new Response(`own route ${pathname}`);
  });
  return {
    chorus,
    origin: `http://127.0.0.1:${server.addr.port}`,
    ws: (path) => `ws://127.0.0.1:${server.addr.port}${path}`,
    async close() {
      await chorus.shutdown();
      await server.shutdown();
    },
  };
}
