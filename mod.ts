/**
 * chorus as a library: mount the WebSocket broadcast hub in your own `Deno.serve` app, under a
 * path prefix next to your own routes, and publish into its rooms from your code.
 *
 * ```ts
 * import { createChorus } from "./mod.ts";
 *
 * const chorus = await createChorus({ basePath: "/ws" });
 * Deno.serve((req, info) => {
 *   const { pathname } = new URL(req.url);
 *   if (pathname === "/ws" || pathname.startsWith("/ws/")) return chorus.handler(req, info);
 *   return new Response("my own route");
 * });
 * ```
 *
 * The command-line server is `./main.ts` (export `./cli`); both build the same hub and handler
 * (`src/app.ts`). `docs/embedding.md` has the whole story.
 * @module
 */
import { DEFAULT_PUBLISHER_NAME, PUBLISHER_ID } from "./src/api.ts";
import { createApp, redisBackplane } from "./src/app.ts";
import { KeyError, loadPublicKey, parseRoom } from "./src/auth.ts";
import { ConfigError, configFrom } from "./src/config.ts";
import { createLogger } from "./src/log.ts";
import { checkName } from "./src/protocol.ts";

/**
 * What a {@link createChorus} hub does, as typed values. Every field is optional; the defaults
 * are those of the command line (the `DEFAULTS` table of `src/config.ts`, which
 * `docs/operations.md` explains), and invalid values are refused with the flag's own ranges.
 *
 * Units: durations are in **seconds** (as the flags), sizes in **bytes**.
 */
export interface ChorusOptions {
  /**
   * Path prefix chorus is mounted under, e.g. `"/ws"`: a WebSocket to `/ws/lobby` joins room
   * `/lobby`, and `/ws/healthz`, `/ws/metrics`, `/ws/api/…` and the chat page at `/ws/ROOM`
   * live under it too. A request outside the prefix gets a JSON 404. `""` or `"/"` serves
   * from the root, as the command line does.
   * @default ""
   */
  basePath?: string;
  /**
   * The latest chat messages a `chorus.v1` client gets in its `welcome`; 0 sends none.
   * @default 50
   */
  history?: number;
  /**
   * Where rooms' streams are kept: `"sqlite"` in `dataDir` (survives restarts), `"memory"`
   * (nothing on disk), or `"redis"` (the only one, and the default, with `redisUrl`). See
   * `docs/operations.md#storage`.
   * @default "sqlite"
   */
  store?: "sqlite" | "memory" | "redis";
  /**
   * Directory of the SQLite store, created if missing; your program needs read and write
   * permission for it.
   * @default "./data"
   */
  dataDir?: string;
  /**
   * Messages kept per room; older ones are trimmed.
   * @default 10000
   */
  retainMessages?: number;
  /**
   * Days a message is kept (fractions allowed).
   * @default 30
   */
  retainDays?: number;
  /**
   * Bytes of messages the SQLite store keeps in all; the oldest messages go first.
   * @default 4294967296
   */
  retainBytes?: number;
  /**
   * When a SQLite commit reaches the disk: `"normal"` survives a crash of your program,
   * `"full"` also a power loss, at an fsync per commit (see `docs/operations.md#crash-safety`).
   * @default "normal"
   */
  storeSync?: "normal" | "full";
  /**
   * Bytes the memory store's rooms may use together; the least recently written rooms lose
   * their oldest messages first.
   * @default 67108864
   */
  historyMaxBytes?: number;
  /**
   * Members a room may have and still get per-member presence (`join`, `leave`, every member
   * in `welcome`); a larger room is told its member count instead (see `docs/protocol.md`).
   * @default 1000
   */
  presenceLimit?: number;
  /**
   * Least seconds between two member counts told to a room over `presenceLimit` (fractions
   * allowed).
   * @default 1
   */
  presenceInterval?: number;
  /**
   * Largest message relayed, in bytes; a larger one closes its sender with 1009.
   * @default 65536
   */
  maxMessageBytes?: number;
  /**
   * Unsent bytes a socket may queue before it is closed as a slow consumer (1008).
   * @default 1048576
   */
  maxBufferedBytes?: number;
  /**
   * Messages per second each connection may send, on average; 0 disables the limit.
   * @default 50
   */
  rateLimit?: number;
  /**
   * Messages a connection may send in a burst.
   * @default 100
   */
  rateBurst?: number;
  /**
   * Open WebSockets allowed on this hub; more are refused with 503.
   * @default 10000
   */
  maxConnections?: number;
  /**
   * Open WebSockets allowed from one IP address; more are refused with 429. Behind a proxy
   * every client has the proxy's address, as `info.remoteAddr` is what counts.
   * @default 1000
   */
  maxConnectionsPerIp?: number;
  /**
   * Browser origins allowed to connect besides the request's own host, or `"*"` for any.
   * @default []
   */
  allowedOrigins?: string[] | "*";
  /**
   * Seconds of silence after which a peer that does not answer pings is dropped; 0 disables.
   * @default 30
   */
  idleTimeout?: number;
  /**
   * Bearer key of the HTTP API under `BASE/api` (at least 16 characters); without one those
   * paths are 404. {@link Chorus.publish} needs no key.
   * @default undefined
   */
  apiKey?: string;
  /**
   * HS256 secret (at least 32 characters); with it every WebSocket must carry a JWT in its
   * `token` query parameter.
   * @default undefined
   */
  jwtSecret?: string;
  /**
   * PEM text (not a file name) of an RS256 or ES256 public key that verifies connection
   * tokens instead of `jwtSecret`; checked before {@link createChorus} resolves.
   * @default undefined
   */
  jwtPublicKeyPem?: string;
  /**
   * Required `aud` claim of connection tokens.
   * @default undefined
   */
  jwtAudience?: string;
  /**
   * Required `iss` claim of connection tokens.
   * @default undefined
   */
  jwtIssuer?: string;
  /**
   * Seconds of clock difference tolerated on a token's `exp` and `nbf`.
   * @default 30
   */
  jwtClockSkew?: number;
  /**
   * Redis server (`redis://HOST:PORT[/DB]`) whose pub/sub joins several processes into one
   * hub (see `docs/scaling.md`); the Redis client is loaded only with it.
   * @default undefined
   */
  redisUrl?: string;
  /**
   * Least severe log level chorus writes to stderr: `"error"`, `"warn"`, `"info"` or `"debug"`.
   * @default "info"
   */
  logLevel?: "error" | "warn" | "info" | "debug";
  /**
   * Log line format.
   * @default "text"
   */
  logFormat?: "text" | "json";
}

/** One member of a room, as {@link Chorus.rooms} lists it. */
export interface RoomMember {
  /** The member id: the token's `sub`, or a generated id without authentication. */
  id: string;
  /** The display name. */
  name: string;
  /** `"chat"` for a `chorus.v1` client, `"raw"` for any other WebSocket. */
  mode: "raw" | "chat";
}

/** A room with members, as {@link Chorus.rooms} lists it. */
export interface RoomInfo {
  /** The room's name: the path after the base path, e.g. `/lobby`. */
  room: string;
  /** Its members, on this process first, then on others of the same Redis backplane. */
  members: RoomMember[];
}

/** A running chorus hub, from {@link createChorus}. */
export interface Chorus {
  /**
   * The request handler, in the shape `Deno.serve` takes. Pass `info` on: it carries the
   * client's address, which the per-IP connection limit counts.
   */
  handler: (req: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;
  /**
   * Broadcast into `room` from outside it, exactly as `POST /api/publish` does: text reaches
   * raw clients as a text frame and `chorus.v1` clients as a `message` from id `server`
   * (and enters the history); bytes reach raw clients only, as a binary frame. It is the
   * application's own voice, so a moderation hook is not asked (like `?moderate=false`).
   * @param room a room path like `/lobby` (without the base path)
   * @param data the message
   * @param from the publisher's display name (default `server`)
   * @returns how many sockets of this process it was sent to
   * @throws {TypeError} for a room that is not a path or an invalid name
   */
  publish(room: string, data: string | Uint8Array | ArrayBuffer, from?: string): number;
  /** Every room with members, sorted by name, with those members. */
  rooms(): RoomInfo[];
  /**
   * Close every socket with 1001 `server shutting down` (waiting up to 2 s for the close
   * handshakes) and release the hub's timers and backplane. Upgrades afterwards get 503. It
   * does not stop your `Deno.serve`; stop that afterwards.
   */
  shutdown(): Promise<void>;
}

/**
 * Build a chorus hub and its request handler, to mount in your own `Deno.serve` app.
 *
 * It resolves once the options are checked (with the command line's ranges; a bad one rejects
 * with an `Error` named `ConfigError`), a `jwtPublicKeyPem` has been imported, and, with
 * `redisUrl`, the Redis client is loaded.
 *
 * @example Chorus under /ws, next to your own routes
 * ```ts
 * import { createChorus } from "./mod.ts";
 *
 * const chorus = await createChorus({ basePath: "/ws", history: 100 });
 * const server = Deno.serve({ port: 8000 }, (req, info) => {
 *   const url = new URL(req.url);
 *   if (url.pathname === "/ws" || url.pathname.startsWith("/ws/")) {
 *     return chorus.handler(req, info); // ws://localhost:8000/ws/lobby is room /lobby
 *   }
 *   if (url.pathname === "/hello") {
 *     chorus.publish("/lobby", "someone said hello");
 *     return new Response("hello\n");
 *   }
 *   return new Response("not found\n", { status: 404 });
 * });
 * Deno.addSignalListener("SIGTERM", async () => {
 *   await chorus.shutdown();
 *   await server.shutdown();
 * });
 * ```
 */
export async function createChorus(options: ChorusOptions = {}): Promise<Chorus> {
  const { basePath, jwtPublicKeyPem, logLevel, logFormat, ...values } = options;
  if (jwtPublicKeyPem !== undefined && values.jwtSecret !== undefined) {
    throw new ConfigError("jwtSecret and jwtPublicKeyPem are mutually exclusive");
  }
  const jwtOn = values.jwtSecret !== undefined || jwtPublicKeyPem !== undefined;
  if (!jwtOn && (values.jwtAudience !== undefined || values.jwtIssuer !== undefined)) {
    throw new ConfigError("jwtAudience and jwtIssuer need jwtSecret or jwtPublicKeyPem");
  }
  const config = configFrom({ ...values, logLevel, logFormat });
  if (jwtPublicKeyPem !== undefined) {
    try {
      await loadPublicKey(jwtPublicKeyPem);
    } catch (err) {
      if (!(err instanceof KeyError)) throw err;
      throw new ConfigError(`jwtPublicKeyPem: ${err.message}`);
    }
  }
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const app = createApp(config, {
    log,
    jwtPublicKeyPem,
    basePath,
    bus: await redisBackplane(config, log),
  });
  let stopped: Promise<void> | undefined;
  return {
    handler: app.handler,
    publish(room, data, from = DEFAULT_PUBLISHER_NAME) {
      const name = checkName(from);
      if (!name.ok) throw new TypeError(`from: ${name.message}`);
      const path = parseRoom(room);
      if (path === null) {
        throw new TypeError(
          `room must be a path like /lobby (no query, no dot segments), got "${room}"`,
        );
      }
      const bytes = typeof data === "string" || data instanceof ArrayBuffer
        ? data
        : data.slice().buffer;
      const sender = { id: PUBLISHER_ID, name: name.name };
      return app.hub.publish(path, bytes, sender, undefined, false);
    },
    rooms() {
      return [...app.hub.directory()]
        .map(([room, members]) => ({
          room,
          members: members.map(({ id, name, mode }) => ({ id, name, mode })),
        }));
    },
    shutdown() {
      return stopped ??= app.shutdown();
    },
  };
}
