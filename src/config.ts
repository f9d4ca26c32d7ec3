/**
 * Flags and environment variables folded into one typed, validated {@link Config}.
 *
 * The {@link OPTIONS} table is the single source of truth: it drives `parseArgs`, the
 * `CHORUS_*` environment twins, `--help` and the defaults documented in the README.
 * @module
 */
import { parseArgs } from "node:util";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "./log.ts";

/** Everything the server needs to know at start; built once by {@link parseConfig}. */
export interface Config {
  /** TCP port to listen on; 0 picks a free one. */
  port: number;
  /** Interface to bind. */
  hostname: string;
  /** Chat messages kept per room for `welcome`; 0 disables history. */
  history: number;
  /** Seconds an empty room's history survives, so a reload does not lose the conversation. */
  historyTtl: number;
  /** Memory all rooms' histories may use together; the least recently used rooms lose theirs first. */
  historyMaxBytes: number;
  /** Largest message relayed, in bytes; a larger one closes its sender with 1009. */
  maxMessageBytes: number;
  /** A socket whose unsent queue passes this many bytes is closed as a slow consumer. */
  maxBufferedBytes: number;
  /** Messages per second each connection may send, on average (token bucket refill rate). */
  rateLimit: number;
  /** Messages a connection may send in a burst (token bucket size). */
  rateBurst: number;
  /** Open WebSockets allowed on the whole server; more are refused with 503. */
  maxConnections: number;
  /** Open WebSockets allowed from one IP address; more are refused with 429. */
  maxConnectionsPerIp: number;
  /** Browser origins allowed to upgrade besides the same host: a list, or "*" for any. */
  allowedOrigins: string[] | "*";
  /** Seconds of silence after which Deno pings (at half) and drops a peer that does not answer. 0 disables. */
  idleTimeout: number;
  /** PEM certificate file; with `key`, serve HTTPS and WSS. */
  cert: string | undefined;
  /** PEM private key file for `cert`. */
  key: string | undefined;
  /** Least severe log level written to stderr. */
  logLevel: LogLevel;
  /** Log line format. */
  logFormat: LogFormat;
  /** Worker threads sharing the port and forming one hub; 1 runs everything on the main thread. */
  workers: number;
}

/** The defaults table: every limit has a name and a value here, and the docs copy it. */
export const DEFAULTS: Readonly<Config> = Object.freeze({
  port: 8080,
  hostname: "0.0.0.0",
  history: 50,
  historyTtl: 600,
  historyMaxBytes: 64 * 1024 * 1024,
  maxMessageBytes: 65_536,
  maxBufferedBytes: 1_048_576,
  rateLimit: 50,
  rateBurst: 100,
  maxConnections: 10_000,
  maxConnectionsPerIp: 1_000,
  allowedOrigins: [],
  idleTimeout: 30,
  cert: undefined,
  key: undefined,
  logLevel: "info",
  logFormat: "text",
  workers: 1,
});

/** Thrown for bad flags or environment values; `main.ts` prints its message and exits 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

type Parser<T> = (raw: string, label: string) => T;

interface OptionSpec<K extends keyof Config = keyof Config> {
  key: K;
  flag: string;
  /** Extra environment name accepted besides `CHORUS_<FLAG>` (e.g. `PORT`). */
  alsoEnv?: string;
  valueName: string;
  description: string;
  parse: Parser<Config[K]>;
}

function integer(min: number, max: number): Parser<number> {
  return (raw, label) => {
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(`${label}: expected an integer from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
}

const text: Parser<string> = (raw, label) => {
  if (raw.trim() === "") throw new ConfigError(`${label}: must not be empty`);
  return raw.trim();
};

function oneOf<T extends string>(values: readonly T[]): Parser<T> {
  return (raw, label) => {
    if (!(values as readonly string[]).includes(raw)) {
      throw new ConfigError(`${label}: expected one of ${values.join(", ")}, got "${raw}"`);
    }
    return raw as T;
  };
}

const origins: Parser<string[] | "*"> = (raw, label) => {
  if (raw.trim() === "*") return "*";
  const list = raw.split(",").map((o) => o.trim()).filter((o) => o !== "");
  for (const o of list) {
    let url: URL;
    try {
      url = new URL(o);
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;
      throw new ConfigError(`${label}: "${o}" is not an origin like https://example.com`);
    }
    if (url.origin !== o.replace(/\/$/, "")) {
      throw new ConfigError(`${label}: "${o}" is not an origin like https://example.com`);
    }
  }
  return list.map((o) => new URL(o).origin);
};

const workers: Parser<number> = (raw, label) =>
  raw.trim() === "auto" ? navigator.hardwareConcurrency : integer(1, 256)(raw, label);

const optionalText: Parser<string | undefined> = (raw, label) => text(raw, label);

function option<K extends keyof Config>(spec: OptionSpec<K>): OptionSpec<K> {
  return spec;
}

/** Every option chorus accepts, in `--help` order. */
export const OPTIONS: readonly OptionSpec[] = [
  option({
    key: "port",
    flag: "port",
    alsoEnv: "PORT",
    valueName: "N",
    description: "TCP port to listen on (0 picks a free port)",
    parse: integer(0, 65535),
  }),
  option({
    key: "hostname",
    flag: "hostname",
    valueName: "HOST",
    description: "interface to bind",
    parse: text,
  }),
  option({
    key: "history",
    flag: "history",
    valueName: "N",
    description: "chat messages kept per room and sent on join (0 disables)",
    parse: integer(0, 10_000),
  }),
  option({
    key: "historyTtl",
    flag: "history-ttl",
    valueName: "SECONDS",
    description: "how long an empty room keeps its history",
    parse: integer(0, 7 * 24 * 3600),
  }),
  option({
    key: "historyMaxBytes",
    flag: "history-max-bytes",
    valueName: "BYTES",
    description: "memory all rooms' histories may use together; cold rooms are trimmed first",
    parse: integer(0, 1024 * 1024 * 1024 * 16),
  }),
  option({
    key: "maxMessageBytes",
    flag: "max-message-bytes",
    valueName: "BYTES",
    description: "largest message relayed; a larger one closes its sender with 1009",
    parse: integer(1, 64 * 1024 * 1024),
  }),
  option({
    key: "maxBufferedBytes",
    flag: "max-buffered-bytes",
    valueName: "BYTES",
    description: "unsent bytes a socket may queue before it is closed as a slow consumer",
    parse: integer(1024, 1024 * 1024 * 1024),
  }),
  option({
    key: "rateLimit",
    flag: "rate-limit",
    valueName: "N",
    description: "messages per second per connection, on average (0 disables)",
    parse: integer(0, 1_000_000),
  }),
  option({
    key: "rateBurst",
    flag: "rate-burst",
    valueName: "N",
    description: "messages a connection may send in a burst",
    parse: integer(1, 1_000_000),
  }),
  option({
    key: "maxConnections",
    flag: "max-connections",
    valueName: "N",
    description: "open WebSockets on the whole server; more get 503",
    parse: integer(1, 10_000_000),
  }),
  option({
    key: "maxConnectionsPerIp",
    flag: "max-connections-per-ip",
    valueName: "N",
    description: "open WebSockets from one IP address; more get 429",
    parse: integer(1, 10_000_000),
  }),
  option({
    key: "allowedOrigins",
    flag: "allowed-origins",
    valueName: "LIST",
    description: "comma list of extra browser origins allowed to connect, or * for any",
    parse: origins,
  }),
  option({
    key: "idleTimeout",
    flag: "idle-timeout",
    valueName: "SECONDS",
    description: "drop a peer that does not answer pings for this long (0 disables)",
    parse: integer(0, 86_400),
  }),
  option({
    key: "cert",
    flag: "cert",
    valueName: "FILE",
    description: "PEM certificate; with --key serves HTTPS and WSS",
    parse: optionalText,
  }),
  option({
    key: "key",
    flag: "key",
    valueName: "FILE",
    description: "PEM private key for --cert",
    parse: optionalText,
  }),
  option({
    key: "logLevel",
    flag: "log-level",
    valueName: "LEVEL",
    description: `least severe log level written to stderr (${LOG_LEVELS.join(", ")})`,
    parse: oneOf(LOG_LEVELS),
  }),
  option({
    key: "logFormat",
    flag: "log-format",
    valueName: "FORMAT",
    description: "log line format (text, json)",
    parse: oneOf(["text", "json"] as const),
  }),
  option({
    key: "workers",
    flag: "workers",
    valueName: "N",
    description: "worker threads sharing the port as one hub (auto: one per CPU core)",
    parse: workers,
  }),
];

/** The environment variable that mirrors a flag: `--max-connections` → `CHORUS_MAX_CONNECTIONS`. */
export function envName(flag: string): string {
  return "CHORUS_" + flag.toUpperCase().replaceAll("-", "_");
}

/** Every environment variable chorus reads, so callers can grant exactly those. */
export function envNames(): string[] {
  return OPTIONS.flatMap((o) => o.alsoEnv ? [envName(o.flag), o.alsoEnv] : [envName(o.flag)]);
}

/** What the command line asked for: run with a config, or print help or the version. */
export type Command =
  | { kind: "serve"; config: Config }
  | { kind: "help" }
  | { kind: "version" };

/**
 * Parse flags and environment into a {@link Command}; flags win over the environment.
 * Throws {@link ConfigError} with a one-line message for anything invalid.
 */
export function parseConfig(
  args: string[],
  env: (name: string) => string | undefined = () => undefined,
): Command {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
  };
  for (const o of OPTIONS) options[o.flag] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError(firstLine(err instanceof Error ? err.message : String(err)));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };

  const config: Record<string, unknown> = { ...DEFAULTS };
  for (const o of OPTIONS) {
    const flagValue = values[o.flag];
    if (typeof flagValue === "string") {
      config[o.key] = o.parse(flagValue, `--${o.flag}`);
      continue;
    }
    for (const name of [envName(o.flag), o.alsoEnv]) {
      const raw = name === undefined ? undefined : env(name);
      if (raw !== undefined && raw !== "") {
        config[o.key] = o.parse(raw, name!);
        break;
      }
    }
  }
  if ((config.cert === undefined) !== (config.key === undefined)) {
    throw new ConfigError("--cert and --key must be given together");
  }
  return { kind: "serve", config: config as unknown as Config };
}

function firstLine(message: string): string {
  return message.split("\n")[0];
}

/** A default as the docs and `--help` show it: `none` when unset, `same host` for no origins. */
export function formatDefault(key: keyof Config): string {
  const value = DEFAULTS[key];
  if (value === undefined) return "none";
  if (Array.isArray(value)) return value.length === 0 ? "same host" : value.join(",");
  return String(value);
}

/** The `--help` text, generated from {@link OPTIONS} so it cannot drift from the code. */
export function usage(): string {
  const rows = OPTIONS.map((o) => {
    const left = `  --${o.flag} ${o.valueName}`;
    return `${left.padEnd(30)} ${o.description} (default ${formatDefault(o.key)}; env ${
      [envName(o.flag), o.alsoEnv].filter(Boolean).join(", ")
    })`;
  });
  return [
    "Usage: chorus [options]",
    "",
    "A real-time WebSocket broadcast hub: every message is relayed to everyone in the same room.",
    "",
    "Options:",
    ...rows,
    `${"  -h, --help".padEnd(30)} print this help and exit`,
    `${"  -V, --version".padEnd(30)} print the version and exit`,
  ].join("\n");
}
