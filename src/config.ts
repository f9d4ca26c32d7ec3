/**
 * Flags and environment variables folded into one typed, validated {@link Config}.
 *
 * The {@link OPTIONS} table is the single source of truth: it drives `parseArgs`, the
 * `CHORUS_*` environment twins, `--help` and the defaults documented in the README.
 * @module
 */
import { parseArgs } from "node:util";
import { type MintOptions, parseRoomPattern } from "./auth.ts";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "./log.ts";
import { checkName } from "./protocol.ts";

/** Everything the server needs to know at start; built once by {@link parseConfig}. */
export interface Config {
  /** TCP port to listen on; 0 picks a free one. */
  port: number;
  /** Interface to bind. */
  hostname: string;
  /** Chat messages a `welcome` carries (the room's latest); 0 sends none. */
  history: number;
  /**
   * Where rooms' streams are kept: `sqlite` under {@link dataDir} (survives restarts),
   * `memory` (nothing on disk), or `redis` (shared by every instance; the only one, and the
   * default, with {@link redisUrl}).
   */
  store: StoreKind;
  /** Directory of the SQLite store, created if missing. */
  dataDir: string;
  /** Messages kept per room; older ones are trimmed. */
  retainMessages: number;
  /** Days a message is kept. */
  retainDays: number;
  /** Bytes of messages the SQLite store keeps in all; the oldest messages go first. */
  retainBytes: number;
  /**
   * When a SQLite commit reaches the disk: `normal` survives a crash of chorus, `full` also a
   * power loss, at an fsync per commit.
   */
  storeSync: "normal" | "full";
  /** Memory the `memory` store's rooms may use together; the least recently written go first. */
  historyMaxBytes: number;
  /**
   * Members a room may have and still get per-member presence (`join`, `leave`, the full list
   * in `welcome`); a larger room is told its member count instead, which keeps it linear.
   */
  presenceLimit: number;
  /** Seconds between two member counts told to a room over the presence limit, at least. */
  presenceInterval: number;
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
  /** Bearer key of the HTTP API under `/api`; without one every `/api` path answers 404. */
  apiKey: string | undefined;
  /** HS256 secret; with it (or `jwtPublicKey`) every upgrade must carry a valid JWT. */
  jwtSecret: string | undefined;
  /** PEM file of the RS256 or ES256 public key that verifies connection tokens. */
  jwtPublicKey: string | undefined;
  /** Required `aud` claim of connection tokens, when set. */
  jwtAudience: string | undefined;
  /** Required `iss` claim of connection tokens, when set. */
  jwtIssuer: string | undefined;
  /** Seconds of clock difference tolerated on `exp` and `nbf`, since clocks are never in step. */
  jwtClockSkew: number;
  /** Redis server whose pub/sub joins several instances into one hub; none runs a single instance. */
  redisUrl: string | undefined;
  /** Where room and member events are POSTed, batched and signed (`docs/hooks.md`); none sends none. */
  webhookUrl: string | undefined;
  /**
   * The secret every request to the application is signed with (webhooks, the connect hook,
   * the moderation hook); required with any of their URLs.
   */
  webhookSecret: string | undefined;
  /** The webhook event types sent; `message` is opt-in because it is the bulk. */
  webhookEvents: WebhookEventType[];
  /** Seconds a webhook request may take before it counts as failed and is retried. */
  webhookTimeout: number;
  /** Webhook events held while the application is slow or down; more are counted and dropped. */
  webhookQueue: number;
  /** Seconds a room must stay empty before `room.vacated` is sent, so a reload does not flap. */
  webhookVacateDelay: number;
  /** Asked before every WebSocket upgrade and event stream is accepted; none asks nobody. */
  connectHookUrl: string | undefined;
  /** Seconds the connect hook may take to answer. */
  connectHookTimeout: number;
  /** What a connect hook that fails or times out means: refuse (`closed`) or accept (`open`). */
  connectHookFailure: HookFailure;
  /** Asked about every chat message before it is stored or delivered; none asks nobody. */
  publishHookUrl: string | undefined;
  /** Seconds the moderation hook may take to answer. */
  publishHookTimeout: number;
  /** What a moderation hook that fails or times out means: reject (`closed`) or allow (`open`). */
  publishHookFailure: HookFailure;
  /** Messages of one room that may wait for the moderation hook's verdict; more are refused. */
  publishHookQueue: number;
}

/** What a hook that cannot be asked means; see {@link Config.connectHookFailure}. */
export type HookFailure = "open" | "closed";

/** Every webhook event type, in the order `docs/hooks.md` lists them. */
export const WEBHOOK_EVENT_TYPES = [
  "room.occupied",
  "room.vacated",
  "member.joined",
  "member.left",
  "message",
] as const;

/** One of {@link WEBHOOK_EVENT_TYPES}. */
export type WebhookEventType = typeof WEBHOOK_EVENT_TYPES[number];

/** Where rooms' streams are kept; see {@link Config.store}. */
export type StoreKind = "sqlite" | "memory" | "redis";

/** The defaults table: every limit has a name and a value here, and the docs copy it. */
export const DEFAULTS: Readonly<Config> = Object.freeze({
  port: 8080,
  hostname: "0.0.0.0",
  history: 50,
  store: "sqlite",
  dataDir: "./data",
  retainMessages: 10_000,
  retainDays: 30,
  retainBytes: 4 * 1024 * 1024 * 1024,
  storeSync: "normal",
  historyMaxBytes: 64 * 1024 * 1024,
  presenceLimit: 1000,
  presenceInterval: 1,
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
  apiKey: undefined,
  jwtSecret: undefined,
  jwtPublicKey: undefined,
  jwtAudience: undefined,
  jwtIssuer: undefined,
  jwtClockSkew: 30,
  redisUrl: undefined,
  webhookUrl: undefined,
  webhookSecret: undefined,
  webhookEvents: [
    "room.occupied",
    "room.vacated",
    "member.joined",
    "member.left",
  ] as WebhookEventType[],
  webhookTimeout: 5,
  webhookQueue: 10_000,
  webhookVacateDelay: 5,
  connectHookUrl: undefined,
  connectHookTimeout: 2,
  connectHookFailure: "closed",
  publishHookUrl: undefined,
  publishHookTimeout: 2,
  publishHookFailure: "closed",
  publishHookQueue: 1000,
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

/** A duration in seconds, fractions allowed (`0.25`), from `min` to `max`. */
function decimal(min: number, max: number, unit: string): Parser<number> {
  return (raw, label) => {
    const n = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw.trim()) || n < min || n > max) {
      throw new ConfigError(`${label}: expected ${unit} from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
}

function seconds(min: number, max: number): Parser<number> {
  return decimal(min, max, "seconds");
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

/** A secret that guessing must not find: at least `min` characters, kept as given. */
function secret(min: number): Parser<string | undefined> {
  return (raw, label) => {
    if (raw.length < min) throw new ConfigError(`${label}: must be at least ${min} characters`);
    return raw;
  };
}

/** Smallest `--api-key`, so the key cannot be guessed by trying. */
export const MIN_API_KEY_LENGTH = 16;

/** Smallest `--jwt-secret`: HS256 wants a key at least as long as its 256-bit hash. */
export const MIN_JWT_SECRET_LENGTH = 32;

/**
 * A `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` URL, normalised. The error never repeats the
 * value, which may carry a password.
 */
const redisUrl: Parser<string | undefined> = (raw, label) => {
  const wrong = (why: string) =>
    new ConfigError(`${label}: expected redis://HOST:PORT[/DB], ${why}`);
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    throw wrong("got something that is not a URL");
  }
  if (url.protocol !== "redis:") throw wrong(`got the scheme ${url.protocol}`);
  if (url.hostname === "") throw wrong("got no host");
  if (url.search !== "" || url.hash !== "") throw wrong("got a query or fragment");
  if (!/^(\/(\d{1,5})?)?$/.test(url.pathname)) throw wrong("got a path that is not a DB number");
  return url.href.replace(/\/$/, "");
};

/** An `http://` or `https://` URL of the application, normalised. */
const hookUrl: Parser<string | undefined> = (raw, label) => {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    throw new ConfigError(`${label}: expected an http:// or https:// URL, got "${raw}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${label}: expected an http:// or https:// URL, got ${url.protocol}`);
  }
  return url.href;
};

const webhookEvents: Parser<WebhookEventType[]> = (raw, label) => {
  const list = raw.split(",").map((e) => e.trim()).filter((e) => e !== "");
  if (list.length === 0) throw new ConfigError(`${label}: must name at least one event`);
  for (const e of list) {
    if (!(WEBHOOK_EVENT_TYPES as readonly string[]).includes(e)) {
      throw new ConfigError(
        `${label}: unknown event "${e}"; expected some of ${WEBHOOK_EVENT_TYPES.join(", ")}`,
      );
    }
  }
  return [...new Set(list)] as WebhookEventType[];
};

/** Smallest `--webhook-secret`: the HMAC key is as long as its 256-bit hash, like HS256's. */
export const MIN_WEBHOOK_SECRET_LENGTH = 32;

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
    description: "latest chat messages sent on join (0 sends none)",
    parse: integer(0, 10_000),
  }),
  option({
    key: "store",
    flag: "store",
    valueName: "KIND",
    description: "where rooms' streams are kept: sqlite (in --data-dir), memory, or redis",
    parse: oneOf(["sqlite", "memory", "redis"] as const),
  }),
  option({
    key: "dataDir",
    flag: "data-dir",
    valueName: "DIR",
    description: "directory of the SQLite store (created if missing)",
    parse: text,
  }),
  option({
    key: "retainMessages",
    flag: "retain-messages",
    valueName: "N",
    description: "messages kept per room (0 keeps none)",
    parse: integer(0, 100_000_000),
  }),
  option({
    key: "retainDays",
    flag: "retain-days",
    valueName: "DAYS",
    description: "days a message is kept (fractions allowed)",
    parse: decimal(0.0001, 36_500, "days"),
  }),
  option({
    key: "retainBytes",
    flag: "retain-bytes",
    valueName: "BYTES",
    description: "bytes of messages the SQLite store keeps in all; the oldest go first",
    parse: integer(1024 * 1024, 2 ** 50),
  }),
  option({
    key: "storeSync",
    flag: "store-sync",
    valueName: "MODE",
    description: "SQLite commits survive a crash of chorus (normal) or also a power loss (full)",
    parse: oneOf(["normal", "full"] as const),
  }),
  option({
    key: "historyMaxBytes",
    flag: "history-max-bytes",
    valueName: "BYTES",
    description: "memory the memory store's rooms may use together; cold rooms are trimmed first",
    parse: integer(0, 1024 * 1024 * 1024 * 16),
  }),
  option({
    key: "presenceLimit",
    flag: "presence-limit",
    valueName: "N",
    description: "members a room may have and still get join/leave events; larger rooms get counts",
    parse: integer(0, 10_000_000),
  }),
  option({
    key: "presenceInterval",
    flag: "presence-interval",
    valueName: "SECONDS",
    description: "least time between two member counts sent to a room over --presence-limit",
    parse: seconds(0.01, 60),
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
  option({
    key: "apiKey",
    flag: "api-key",
    valueName: "KEY",
    description:
      `bearer key of the HTTP API under /api (at least ${MIN_API_KEY_LENGTH} characters)`,
    parse: secret(MIN_API_KEY_LENGTH),
  }),
  option({
    key: "jwtSecret",
    flag: "jwt-secret",
    valueName: "SECRET",
    description:
      `HS256 secret (at least ${MIN_JWT_SECRET_LENGTH} characters); connections then need a JWT`,
    parse: secret(MIN_JWT_SECRET_LENGTH),
  }),
  option({
    key: "jwtPublicKey",
    flag: "jwt-public-key",
    valueName: "FILE",
    description: "PEM public key (RS256 or ES256); connections then need a JWT",
    parse: optionalText,
  }),
  option({
    key: "jwtAudience",
    flag: "jwt-audience",
    valueName: "AUD",
    description: "connection tokens must carry this aud claim",
    parse: optionalText,
  }),
  option({
    key: "jwtIssuer",
    flag: "jwt-issuer",
    valueName: "ISS",
    description: "connection tokens must carry this iss claim",
    parse: optionalText,
  }),
  option({
    key: "jwtClockSkew",
    flag: "jwt-clock-skew",
    valueName: "SECONDS",
    description: "clock difference tolerated on a token's exp and nbf",
    parse: integer(0, 3600),
  }),
  option({
    key: "redisUrl",
    flag: "redis-url",
    valueName: "URL",
    description: "Redis server that joins instances into one hub (redis://HOST:PORT[/DB])",
    parse: redisUrl,
  }),
  option({
    key: "webhookUrl",
    flag: "webhook-url",
    valueName: "URL",
    description: "POST room and member events here, batched and signed (needs --webhook-secret)",
    parse: hookUrl,
  }),
  option({
    key: "webhookSecret",
    flag: "webhook-secret",
    valueName: "SECRET",
    description:
      `signs every request to the application (at least ${MIN_WEBHOOK_SECRET_LENGTH} characters)`,
    parse: secret(MIN_WEBHOOK_SECRET_LENGTH),
  }),
  option({
    key: "webhookEvents",
    flag: "webhook-events",
    valueName: "LIST",
    description: `comma list of webhook events sent (of ${WEBHOOK_EVENT_TYPES.join(", ")})`,
    parse: webhookEvents,
  }),
  option({
    key: "webhookTimeout",
    flag: "webhook-timeout",
    valueName: "SECONDS",
    description: "time a webhook request may take before it is retried",
    parse: seconds(0.1, 300),
  }),
  option({
    key: "webhookQueue",
    flag: "webhook-queue",
    valueName: "N",
    description: "webhook events held while the application is down; more are counted and dropped",
    parse: integer(1, 10_000_000),
  }),
  option({
    key: "webhookVacateDelay",
    flag: "webhook-vacate-delay",
    valueName: "SECONDS",
    description: "time a room stays empty before room.vacated is sent (0 sends it at once)",
    parse: seconds(0, 3600),
  }),
  option({
    key: "connectHookUrl",
    flag: "connect-hook-url",
    valueName: "URL",
    description: "ask the application before accepting each connection (needs --webhook-secret)",
    parse: hookUrl,
  }),
  option({
    key: "connectHookTimeout",
    flag: "connect-hook-timeout",
    valueName: "SECONDS",
    description: "time the connect hook may take to answer",
    parse: seconds(0.05, 60),
  }),
  option({
    key: "connectHookFailure",
    flag: "connect-hook-failure",
    valueName: "MODE",
    description: "a connect hook that fails refuses the connection (closed) or accepts it (open)",
    parse: oneOf(["closed", "open"] as const),
  }),
  option({
    key: "publishHookUrl",
    flag: "publish-hook-url",
    valueName: "URL",
    description: "ask the application about each chat message first (needs --webhook-secret)",
    parse: hookUrl,
  }),
  option({
    key: "publishHookTimeout",
    flag: "publish-hook-timeout",
    valueName: "SECONDS",
    description: "time the moderation hook may take to answer",
    parse: seconds(0.05, 60),
  }),
  option({
    key: "publishHookFailure",
    flag: "publish-hook-failure",
    valueName: "MODE",
    description: "a moderation hook that fails rejects the message (closed) or allows it (open)",
    parse: oneOf(["closed", "open"] as const),
  }),
  option({
    key: "publishHookQueue",
    flag: "publish-hook-queue",
    valueName: "N",
    description: "messages of one room waiting for the moderation hook; more are refused",
    parse: integer(1, 1_000_000),
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

/** What the command line asked for: serve, print help or the version, or mint a token. */
export type Command =
  | { kind: "serve"; config: Config }
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "token"; mint: MintOptions }
  | { kind: "token-help" };

/**
 * Parse flags and environment into a {@link Command}; flags win over the environment.
 * Throws {@link ConfigError} with a one-line message for anything invalid.
 */
export function parseConfig(
  args: string[],
  env: (name: string) => string | undefined = () => undefined,
): Command {
  if (args[0] === "token") return parseTokenCommand(args.slice(1), env);
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
  /** Options given as a flag or in the environment, with the label an error names. */
  const given = new Map<keyof Config, string>();
  for (const o of OPTIONS) {
    const flagValue = values[o.flag];
    if (typeof flagValue === "string") {
      config[o.key] = o.parse(flagValue, `--${o.flag}`);
      given.set(o.key, `--${o.flag}`);
      continue;
    }
    for (const name of [envName(o.flag), o.alsoEnv]) {
      const raw = name === undefined ? undefined : env(name);
      if (raw !== undefined && raw !== "") {
        config[o.key] = o.parse(raw, name!);
        given.set(o.key, name!);
        break;
      }
    }
  }
  checkStore(config as unknown as Config, given.get("store"));
  if ((config.cert === undefined) !== (config.key === undefined)) {
    throw new ConfigError("--cert and --key must be given together");
  }
  if (config.jwtSecret !== undefined && config.jwtPublicKey !== undefined) {
    throw new ConfigError("--jwt-secret and --jwt-public-key are mutually exclusive");
  }
  const jwtOn = config.jwtSecret !== undefined || config.jwtPublicKey !== undefined;
  if (!jwtOn && (config.jwtAudience !== undefined || config.jwtIssuer !== undefined)) {
    throw new ConfigError("--jwt-audience and --jwt-issuer need --jwt-secret or --jwt-public-key");
  }
  checkHooks(config as unknown as Config);
  return { kind: "serve", config: config as unknown as Config };
}

/**
 * A {@link Config} from typed values, for code that embeds chorus instead of parsing flags
 * (`mod.ts`): each value given is checked by its option's parser, with the same ranges as the
 * flag and the key as the label, and the rest come from {@link DEFAULTS}. Throws
 * {@link ConfigError}.
 */
export function configFrom(values: { [K in keyof Config]?: Config[K] | undefined }): Config {
  const config: Record<string, unknown> = { ...DEFAULTS };
  for (const o of OPTIONS) {
    const value = values[o.key];
    if (value === undefined) continue;
    config[o.key] = o.parse(Array.isArray(value) ? value.join(",") : String(value), o.key);
  }
  checkStore(config as unknown as Config, values.store === undefined ? undefined : "store");
  checkHooks(config as unknown as Config);
  return config as unknown as Config;
}

/**
 * Every request to the application is signed, so any hook URL needs the secret. Throws
 * {@link ConfigError}; `createApp` checks again for configs not built here.
 */
export function checkHooks(config: Config): void {
  if (config.webhookSecret !== undefined) return;
  for (const o of OPTIONS) {
    if (o.key.endsWith("Url") && o.key !== "redisUrl" && config[o.key] !== undefined) {
      throw new ConfigError(`--${o.flag} needs --webhook-secret to sign its requests`);
    }
  }
}

/**
 * With a Redis backplane the stream lives in Redis, so every instance shares one order: make
 * `redis` the store then, and refuse another one asked for (`label` names where it was asked).
 */
function checkStore(config: Config, label: string | undefined): void {
  if (config.redisUrl !== undefined) {
    if (label !== undefined && config.store !== "redis") {
      throw new ConfigError(
        `${label}: with --redis-url the stream lives in Redis; use --store redis or leave it out`,
      );
    }
    config.store = "redis";
  } else if (config.store === "redis") {
    throw new ConfigError(`${label ?? "store"}: --store redis needs --redis-url`);
  }
}

/** Longest `--ttl` of `main.ts token`: a year. */
export const MAX_TOKEN_TTL_SECONDS = 366 * 24 * 3600;

/** `main.ts token`'s `--ttl` when none is given. */
export const DEFAULT_TOKEN_TTL = "1h";

const UNIT_SECONDS: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 };

/** A duration like `90`, `90s`, `15m`, `1h` or `7d`, in seconds. */
export function parseDuration(raw: string, label: string): number {
  const match = raw.trim().match(/^(\d+)([smhd]?)$/);
  const seconds = match ? Number(match[1]) * UNIT_SECONDS[match[2]!]! : NaN;
  if (!match || !(seconds >= 1 && seconds <= MAX_TOKEN_TTL_SECONDS)) {
    throw new ConfigError(
      `${label}: expected a duration like 90s, 15m, 1h or 7d, at most 366d, got "${raw}"`,
    );
  }
  return seconds;
}

/** The options of `main.ts token` that are also server options, read the same way. */
const TOKEN_SHARED = ["jwtSecret", "jwtAudience", "jwtIssuer"] as const;

/**
 * Parse `main.ts token --sub ID [--name NAME] [--rooms LIST] [--ttl DURATION]`: an HS256
 * token signed with `--jwt-secret` or `CHORUS_JWT_SECRET` (audience and issuer likewise).
 */
export function parseTokenCommand(
  args: string[],
  env: (name: string) => string | undefined = () => undefined,
): Command {
  const shared = OPTIONS.filter((o) => (TOKEN_SHARED as readonly string[]).includes(o.key));
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    sub: { type: "string" },
    name: { type: "string" },
    rooms: { type: "string" },
    ttl: { type: "string" },
  };
  for (const o of shared) options[o.flag] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError(firstLine(err instanceof Error ? err.message : String(err)));
  }
  if (values.help) return { kind: "token-help" };
  const read: Record<string, string | undefined> = {};
  for (const o of shared) {
    const flagValue = values[o.flag];
    const raw = typeof flagValue === "string" ? flagValue : env(envName(o.flag)) || undefined;
    const label = typeof flagValue === "string" ? `--${o.flag}` : envName(o.flag);
    read[o.key] = raw === undefined ? undefined : o.parse(raw, label) as string | undefined;
  }
  if (read.jwtSecret === undefined) {
    throw new ConfigError(`token: --jwt-secret or ${envName("jwt-secret")} is required`);
  }
  if (typeof values.sub !== "string" || values.sub.trim() === "") {
    throw new ConfigError("token: --sub is required");
  }
  let name: string | undefined;
  if (typeof values.name === "string") {
    const check = checkName(values.name);
    if (!check.ok) throw new ConfigError(`--name: ${check.message}`);
    name = check.name;
  }
  let rooms: string[] | undefined;
  if (typeof values.rooms === "string") {
    rooms = values.rooms.split(",").map((r) => r.trim()).filter((r) => r !== "");
    for (const r of rooms) {
      if (parseRoomPattern(r) === null) {
        throw new ConfigError(
          `--rooms: "${r}" is not a room path like /lobby or a prefix like /a/*`,
        );
      }
    }
  }
  const ttl = typeof values.ttl === "string" ? values.ttl : DEFAULT_TOKEN_TTL;
  return {
    kind: "token",
    mint: {
      secret: read.jwtSecret,
      sub: values.sub.trim(),
      name,
      rooms,
      ttlSeconds: parseDuration(ttl, "--ttl"),
      audience: read.jwtAudience,
      issuer: read.jwtIssuer,
    },
  };
}

/** The `main.ts token --help` text. */
export function tokenUsage(): string {
  return [
    "Usage: chorus token --sub ID [--name NAME] [--rooms LIST] [--ttl DURATION]",
    "",
    "Print an HS256 connection token signed with --jwt-secret (or CHORUS_JWT_SECRET).",
    "",
    "Options:",
    `${"  --sub ID".padEnd(30)} member id (the sub claim); required`,
    `${"  --name NAME".padEnd(30)} display name the member may not change (the name claim)`,
    `${
      "  --rooms LIST".padEnd(30)
    } comma list of rooms (/lobby) or prefixes (/stocks/*); default all`,
    `${
      "  --ttl DURATION".padEnd(30)
    } lifetime like 90s, 15m, 1h, 7d (default ${DEFAULT_TOKEN_TTL})`,
    `${"  --jwt-secret SECRET".padEnd(30)} signing secret (env ${envName("jwt-secret")})`,
    `${"  --jwt-audience AUD".padEnd(30)} aud claim (env ${envName("jwt-audience")})`,
    `${"  --jwt-issuer ISS".padEnd(30)} iss claim (env ${envName("jwt-issuer")})`,
    `${"  -h, --help".padEnd(30)} print this help and exit`,
  ].join("\n");
}

function firstLine(message: string): string {
  return message.split("\n")[0]!;
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
