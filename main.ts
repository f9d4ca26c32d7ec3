/**
 * chorus: a real-time WebSocket broadcast hub. This file is the command line: it owns the
 * process (flags, `Deno.serve`, signals, exit codes) and builds the server with `createApp`
 * of `src/app.ts`, as the library entry point `mod.ts` does.
 * @module
 */
import meta from "./deno.json" with { type: "json" };
import { KeyError, loadPublicKey, mintToken } from "./src/auth.ts";
import { type Config, ConfigError, parseConfig, tokenUsage, usage } from "./src/config.ts";
import { type BusFactory, createApp, redisBackplane } from "./src/app.ts";
import { ListenError, startCluster } from "./src/cluster.ts";
import { createLogger, type Logger } from "./src/log.ts";
import { StoreOpenError } from "./src/sqlite_store.ts";

/** The hint under a bad flag; the full usage stays on `--help`. */
const USAGE_HINT = "Run 'chorus --help' for usage.";

/**
 * A reason to stop before serving: a file that cannot be read, a missing permission, a port
 * that cannot be taken. Helpers throw it and {@link exit} alone prints it and sets the status.
 */
class StartError extends Error {
  override name = "StartError";
  /** The process exit status: 2 for configuration, 1 for a failure to listen. */
  readonly status: number;
  constructor(message: string, status = 2) {
    super(message);
    this.status = status;
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (err) {
    // Not granted --allow-env for this name: behave as if it were unset.
    if (err instanceof Deno.errors.NotCapable) return undefined;
    throw err;
  }
}

/** A listening server, single-threaded or `--workers`, as the process sees it. */
interface Running {
  hostname: string;
  port: number;
  /** Close every socket (1001, see `src/close.ts`), then stop listening. */
  stop(): Promise<void>;
}

function startSingle(
  config: Config,
  tls: Tls | undefined,
  jwtPublicKeyPem: string | undefined,
  log: Logger,
  bus: BusFactory | undefined,
): Running {
  const app = createApp(config, { log, jwtPublicKeyPem, bus });
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    ...tls,
    onListen() {},
  }, app.handler);
  return {
    ...server.addr,
    async stop() {
      log.info("shutting down", { connections: app.hub.connections });
      await app.shutdown();
      await server.shutdown();
    },
  };
}

async function serve(config: Config): Promise<void> {
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const tls = readTls(config);
  checkRedisPermissions(config);
  const jwtPublicKeyPem = await readJwtPublicKey(config);
  // Listen for signals before listening for clients, so no early signal is missed.
  let running: Running | undefined;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("signal received", { signal });
    await running?.stop();
    Deno.exit(0);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => void stop(signal));
  }
  try {
    running = config.workers > 1
      ? await startCluster(config, tls, jwtPublicKeyPem)
      : startSingle(config, tls, jwtPublicKeyPem, log, await redisBackplane(config, log));
  } catch (err) {
    // The data directory cannot be used: a configuration error, before any client is served
    // (with --workers the main thread opens the one store before it starts a worker).
    if (err instanceof StoreOpenError) throw new StartError(err.message);
    if (!isListenError(err)) throw err;
    throw new StartError(
      `cannot listen on ${config.hostname}:${config.port}: ${err.message.split("\n")[0]}`,
      1,
    );
  }
  const host = running.hostname.includes(":") ? `[${running.hostname}]` : running.hostname;
  console.log(`chorus listening on ${tls ? "https" : "http"}://${host}:${running.port}/`);
}

function isListenError(err: unknown): err is Error {
  return err instanceof ListenError || err instanceof Deno.errors.AddrInUse ||
    err instanceof Deno.errors.AddrNotAvailable || err instanceof Deno.errors.PermissionDenied ||
    err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.InvalidData;
}

/** Environment variables node-redis reads when it connects; `deno task start` grants them. */
const REDIS_CLIENT_ENV = ["REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"];

/**
 * With `--redis-url`, the permissions the Redis client needs are a configuration error (exit 2)
 * when missing, rather than a backplane that retries for ever.
 */
function checkRedisPermissions(config: Config): void {
  if (config.redisUrl === undefined) return;
  const url = new URL(config.redisUrl);
  const host = `${url.hostname}:${url.port || "6379"}`;
  const env = REDIS_CLIENT_ENV.filter((variable) =>
    Deno.permissions.querySync({ name: "env", variable }).state !== "granted"
  );
  const missing = [
    ...(env.length > 0 ? [`--allow-env=${env.join(",")}`] : []),
    ...(Deno.permissions.querySync({ name: "net", host }).state === "granted"
      ? []
      : [`--allow-net=${host}`]),
  ];
  if (missing.length === 0) return;
  throw new StartError(
    `--redis-url: the Redis client needs more permissions (grant ${missing.join(" ")})`,
  );
}

/** PEM certificate and key, as `Deno.serve` takes them. */
type Tls = { cert: string; key: string };

/** Read a PEM file named by `flag`; an unreadable file is a configuration error (exit 2). */
function readPem(path: string, flag: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    if (!(err instanceof Error && "code" in err) && !(err instanceof Deno.errors.NotCapable)) {
      throw err;
    }
    const hint = err instanceof Deno.errors.NotCapable ? ` (grant --allow-read=${path})` : "";
    throw new StartError(`${flag}: cannot read ${path}: ${err.message.split("\n")[0]}${hint}`);
  }
}

/** Read the PEM files for TLS; unreadable files are a configuration error (exit 2). */
function readTls(config: Config): Tls | undefined {
  if (config.cert === undefined || config.key === undefined) return undefined;
  const tls = { cert: readPem(config.cert, "--cert"), key: readPem(config.key, "--key") };
  // Build a TLS listener once on a throwaway port, so a bad or mismatched pair is a
  // configuration error (exit 2) rather than a failure to listen.
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls }).close();
  } catch (err) {
    // Deno reports unreadable PEM data as InvalidData and a key of another pair as a plain Error.
    if (!(err instanceof Deno.errors.InvalidData || err?.constructor === Error)) throw err;
    throw new StartError(`--cert/--key: ${err.message.split("\n")[0]}`);
  }
  return tls;
}

/**
 * Read and check the `--jwt-public-key` PEM before listening, so a wrong file stops the
 * server at start (exit 2) rather than refusing every connection later.
 */
async function readJwtPublicKey(config: Config): Promise<string | undefined> {
  if (config.jwtPublicKey === undefined) return undefined;
  const pem = readPem(config.jwtPublicKey, "--jwt-public-key");
  try {
    await loadPublicKey(pem);
  } catch (err) {
    if (!(err instanceof KeyError)) throw err;
    throw new StartError(`--jwt-public-key: ${config.jwtPublicKey}: ${err.message}`);
  }
  return pem;
}

/** Parse the command line and do what it asks; every failure is thrown, for {@link exit}. */
async function run(args: string[]): Promise<void> {
  const command = parseConfig(args, readEnv);
  switch (command.kind) {
    case "help":
      console.log(usage());
      break;
    case "version":
      console.log(`chorus ${meta.version}`);
      break;
    case "serve":
      await serve(command.config);
      break;
    case "token":
      console.log(await mintToken(command.mint));
      break;
    case "token-help":
      console.log(tokenUsage());
      break;
  }
}

/**
 * The one place the CLI gives up: one `chorus: ...` line on stderr and the error's status. A
 * bad flag or environment value adds a hint to `--help` (the `token` tool, used by scripts,
 * does not); anything else is a bug and keeps its stack trace.
 */
function exit(err: unknown, args: string[]): never {
  if (err instanceof ConfigError) {
    console.error(`chorus: ${err.message}`);
    if (args[0] !== "token") console.error(USAGE_HINT);
    Deno.exit(2);
  }
  if (err instanceof StartError) {
    console.error(`chorus: ${err.message}`);
    Deno.exit(err.status);
  }
  if (err instanceof StoreOpenError) {
    console.error(`chorus: ${err.message}`);
    Deno.exit(2);
  }
  throw err;
}

if (import.meta.main) {
  try {
    await run(Deno.args);
  } catch (err) {
    exit(err, Deno.args);
  }
}
