/**
 * `src/config.ts`: `parseConfig(args, env)` defaults, every flag, the `CHORUS_*` environment
 * twins (flags win), one-line `ConfigError`s naming the culprit, TLS pairing, origins, and a
 * `usage()` that lists every option; plus the exit status of `main.ts` for a bad env value.
 */
import assert from "node:assert/strict";
import {
  type Command,
  type Config,
  ConfigError,
  configFrom,
  DEFAULTS,
  envName,
  envNames,
  formatDefault,
  OPTIONS,
  parseConfig,
  usage,
} from "../src/config.ts";
import { ROOT, runMain } from "./helpers.ts";

function serve(command: Command): Config {
  assert.equal(command.kind, "serve");
  return (command as { kind: "serve"; config: Config }).config;
}

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

/** Parse and expect a ConfigError with a one-line message; return the message. */
function configError(args: string[], env: Record<string, string> = {}): string {
  try {
    parseConfig(args, envOf(env));
  } catch (err) {
    assert.ok(err instanceof ConfigError, `ConfigError expected, got ${err}`);
    assert.equal(err.name, "ConfigError");
    assert.ok(!err.message.includes("\n"), `one line: ${JSON.stringify(err.message)}`);
    assert.notEqual(err.message, "");
    return err.message;
  }
  assert.fail(`no ConfigError for ${JSON.stringify(args)} ${JSON.stringify(env)}`);
}

/** A valid non-default raw value for each option, and the parsed value it must give. */
const SAMPLES: Record<keyof Config, [string, unknown]> = {
  port: ["9090", 9090],
  hostname: ["127.0.0.1", "127.0.0.1"],
  history: ["7", 7],
  store: ["memory", "memory"],
  dataDir: ["/var/lib/chorus", "/var/lib/chorus"],
  retainMessages: ["100", 100],
  retainDays: ["0.5", 0.5],
  retainBytes: ["1048576", 1048576],
  storeSync: ["full", "full"],
  historyMaxBytes: ["1048576", 1048576],
  presenceLimit: ["5", 5],
  presenceInterval: ["0.25", 0.25],
  maxMessageBytes: ["1024", 1024],
  maxBufferedBytes: ["2048", 2048],
  rateLimit: ["5", 5],
  rateBurst: ["9", 9],
  maxConnections: ["12", 12],
  maxConnectionsPerIp: ["3", 3],
  allowedOrigins: ["https://a.example", ["https://a.example"]],
  idleTimeout: ["0", 0],
  cert: ["/etc/chorus/cert.pem", "/etc/chorus/cert.pem"],
  key: ["/etc/chorus/key.pem", "/etc/chorus/key.pem"],
  logLevel: ["debug", "debug"],
  logFormat: ["json", "json"],
  workers: ["4", 4],
  apiKey: ["k".repeat(16), "k".repeat(16)],
  jwtSecret: ["s".repeat(32), "s".repeat(32)],
  jwtPublicKey: ["/etc/chorus/jwt.pem", "/etc/chorus/jwt.pem"],
  jwtAudience: ["chorus-clients", "chorus-clients"],
  jwtIssuer: ["https://auth.example", "https://auth.example"],
  jwtClockSkew: ["5", 5],
  redisUrl: ["redis://127.0.0.1:6380/2", "redis://127.0.0.1:6380/2"],
  webhookUrl: ["https://app.example/hooks", "https://app.example/hooks"],
  webhookSecret: ["w".repeat(32), "w".repeat(32)],
  webhookEvents: ["message, room.occupied", ["message", "room.occupied"]],
  webhookTimeout: ["0.5", 0.5],
  webhookQueue: ["20", 20],
  webhookVacateDelay: ["0", 0],
  connectHookUrl: ["http://127.0.0.1:3000/connect", "http://127.0.0.1:3000/connect"],
  connectHookTimeout: ["1.5", 1.5],
  connectHookFailure: ["open", "open"],
  publishHookUrl: ["http://127.0.0.1:3000/moderate", "http://127.0.0.1:3000/moderate"],
  publishHookTimeout: ["0.25", 0.25],
  publishHookFailure: ["open", "open"],
  publishHookQueue: ["7", 7],
};

/** An invalid raw value for each option (none for the free-text ones except blank). */
const INVALID: Record<keyof Config, string[]> = {
  port: ["70000", "-1", "abc", "80.5", "1e3", "0x50", ""],
  hostname: ["   "],
  history: ["10001", "-3", "many"],
  store: ["disk", "SQLITE", ""],
  dataDir: ["  "],
  retainMessages: ["-1", "100000001", "1.5"],
  retainDays: ["0", "36501", "1d", "-1"],
  retainBytes: ["1048575", "1GiB"],
  storeSync: ["FULL", "off", ""],
  historyMaxBytes: ["-1", String(16 * 1024 ** 3 + 1), "64MiB"],
  presenceLimit: ["-1", "10000001", "lots", "1.5"],
  presenceInterval: ["0", "0.001", "61", "1s", "-1", ".5", "1e2"],
  maxMessageBytes: ["0", String(64 * 1024 * 1024 + 1)],
  maxBufferedBytes: ["1023", String(1024 ** 3 + 1)],
  rateLimit: ["1000001", "-1", "fast"],
  rateBurst: ["0", "1000001"],
  maxConnections: ["0", "10000001"],
  maxConnectionsPerIp: ["0", "x"],
  allowedOrigins: ["example.com", "https://a.example/path", "null"],
  idleTimeout: ["86401", "30s"],
  cert: ["  "],
  key: ["  "],
  logLevel: ["WARN", "verbose", "trace"],
  logFormat: ["JSON", "logfmt"],
  workers: ["0", "257", "AUTO", "two"],
  apiKey: ["short", "k".repeat(15)],
  jwtSecret: ["s".repeat(31)],
  jwtPublicKey: ["  "],
  jwtAudience: ["  "],
  jwtIssuer: ["  "],
  jwtClockSkew: ["3601", "-1", "5s"],
  redisUrl: ["127.0.0.1:6379", "http://h:6379", "redis://", "redis://h/db", "redis://h?x=1"],
  webhookUrl: ["app.example/hooks", "ftp://app.example/", "  "],
  webhookSecret: ["w".repeat(31)],
  webhookEvents: ["room.created", " , ", "message,nope"],
  webhookTimeout: ["0", "301", "5s"],
  webhookQueue: ["0", "lots"],
  webhookVacateDelay: ["-1", "3601", "5s"],
  connectHookUrl: ["ws://app.example/", "/connect"],
  connectHookTimeout: ["0", "61"],
  connectHookFailure: ["OPEN", "allow"],
  publishHookUrl: ["redis://h:1", "moderate"],
  publishHookTimeout: ["0", "61"],
  publishHookFailure: ["closed ", "deny"],
  publishHookQueue: ["0", "1000001"],
};

/** Flags that must be given with a partner to parse on their own. */
function withPartner(key: keyof Config): string[] {
  if (key === "cert") return ["--key", "/k.pem"];
  if (key === "key") return ["--cert", "/c.pem"];
  if (key === "jwtAudience" || key === "jwtIssuer") return ["--jwt-secret", "s".repeat(32)];
  if (key.endsWith("HookUrl") || key === "webhookUrl") return ["--webhook-secret", "w".repeat(32)];
  return [];
}

/** The env variable a cert or key variable needs beside it to parse. */
function envPartner(key: keyof Config): Record<string, string> {
  if (key === "cert") return { CHORUS_KEY: "/k.pem" };
  if (key === "jwtAudience" || key === "jwtIssuer") return { CHORUS_JWT_SECRET: "s".repeat(32) };
  if (key === "key") return { CHORUS_CERT: "/c.pem" };
  if (key.endsWith("HookUrl") || key === "webhookUrl") {
    return { CHORUS_WEBHOOK_SECRET: "w".repeat(32) };
  }
  return {};
}

Deno.test("no flags and no environment give exactly DEFAULTS", () => {
  assert.deepEqual(serve(parseConfig([])), { ...DEFAULTS });
  assert.deepEqual(serve(parseConfig([], () => undefined)), { ...DEFAULTS });
  assert.deepEqual({ ...DEFAULTS }, {
    port: 8080,
    hostname: "0.0.0.0",
    history: 50,
    store: "sqlite",
    dataDir: "./data",
    retainMessages: 10_000,
    retainDays: 30,
    retainBytes: 4_294_967_296,
    storeSync: "normal",
    historyMaxBytes: 67_108_864,
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
    webhookEvents: ["room.occupied", "room.vacated", "member.joined", "member.left"],
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
  assert.ok(Object.isFrozen(DEFAULTS));
});

Deno.test("every option has a sample here, and OPTIONS covers every Config key once", () => {
  const keys = OPTIONS.map((o) => o.key).sort();
  assert.deepEqual(keys, Object.keys(DEFAULTS).sort());
  assert.deepEqual(keys, Object.keys(SAMPLES).sort());
  assert.equal(new Set(OPTIONS.map((o) => o.flag)).size, OPTIONS.length);
});

Deno.test("every flag parses, as --flag VALUE and --flag=VALUE, and changes only its key", () => {
  for (const o of OPTIONS) {
    const [raw, value] = SAMPLES[o.key];
    for (const args of [[`--${o.flag}`, raw], [`--${o.flag}=${raw}`]]) {
      const config = serve(parseConfig([...args, ...withPartner(o.key)]));
      assert.deepEqual(config[o.key], value, `--${o.flag}`);
      // A Redis backplane is also the store: --redis-url changes store to redis.
      if (o.key === "redisUrl") assert.equal(config.store, "redis");
      for (const other of OPTIONS) {
        if (other.key === o.key || withPartner(o.key).length > 0) continue;
        if (o.key === "redisUrl" && other.key === "store") continue;
        assert.deepEqual(config[other.key], DEFAULTS[other.key], `--${o.flag} left ${other.flag}`);
      }
    }
  }
});

Deno.test("all flags together (but one of the two exclusive JWT keys)", () => {
  // --store memory is refused beside --redis-url (the stream then lives in Redis).
  const together = OPTIONS.filter((o) => o.key !== "jwtPublicKey" && o.key !== "store");
  const args = together.flatMap((o) => [`--${o.flag}`, SAMPLES[o.key][0]]);
  const config = serve(parseConfig(args));
  for (const o of together) assert.deepEqual(config[o.key], SAMPLES[o.key][1], o.flag);
});

Deno.test("--workers auto is one per CPU core; 1 to 256 otherwise", () => {
  assert.equal(serve(parseConfig(["--workers", "auto"])).workers, navigator.hardwareConcurrency);
  assert.equal(
    serve(parseConfig([], envOf({ CHORUS_WORKERS: "auto" }))).workers,
    navigator.hardwareConcurrency,
  );
  assert.equal(serve(parseConfig(["--workers", "256"])).workers, 256);
  assert.equal(
    configError(["--workers", "0"]),
    `--workers: expected an integer from 1 to 256, got "0"`,
  );
});

Deno.test("integer flags trim blanks and accept their bounds", () => {
  const c = serve(parseConfig(["--port", " 0 ", "--history", "0", "--rate-limit", "0"]));
  assert.equal(c.port, 0);
  assert.equal(c.history, 0);
  assert.equal(c.rateLimit, 0);
  assert.equal(serve(parseConfig(["--port", "65535"])).port, 65535);
  assert.equal(serve(parseConfig(["--max-message-bytes", "67108864"])).maxMessageBytes, 2 ** 26);
  assert.equal(serve(parseConfig(["--hostname", "  ::1 "])).hostname, "::1");
});

Deno.test("env twins CHORUS_<FLAG_UPPER_SNAKE> set every option", () => {
  for (const o of OPTIONS) {
    const name = envName(o.flag);
    assert.equal(name, "CHORUS_" + o.flag.toUpperCase().replaceAll("-", "_"));
    const [raw, value] = SAMPLES[o.key];
    const partner = envPartner(o.key);
    const config = serve(parseConfig([], envOf({ [name]: raw, ...partner })));
    assert.deepEqual(config[o.key], value, name);
  }
  assert.equal(envName("max-connections-per-ip"), "CHORUS_MAX_CONNECTIONS_PER_IP");
});

Deno.test("flags win over env twins; CHORUS_PORT wins over PORT; empty env is unset", () => {
  for (const o of OPTIONS) {
    if (o.key === "cert" || o.key === "key") continue;
    const [raw, value] = SAMPLES[o.key];
    // The env value is invalid: a flag must win without the env value even being parsed.
    const env = envOf({ [envName(o.flag)]: INVALID[o.key][0]! });
    const partner = withPartner(o.key);
    assert.deepEqual(
      serve(parseConfig([`--${o.flag}`, raw, ...partner], env))[o.key],
      value,
      o.flag,
    );
  }
  assert.equal(serve(parseConfig(["--port", "1"], envOf({ CHORUS_PORT: "2", PORT: "3" }))).port, 1);
  assert.equal(serve(parseConfig([], envOf({ CHORUS_PORT: "2", PORT: "3" }))).port, 2);
  assert.equal(serve(parseConfig([], envOf({ PORT: "3" }))).port, 3);
  assert.equal(serve(parseConfig([], envOf({ CHORUS_PORT: "", PORT: "3" }))).port, 3);
  assert.equal(serve(parseConfig([], envOf({ CHORUS_HISTORY: "" }))).history, 50);
  // PORT is the only extra name; e.g. HOSTNAME from a shell is not read.
  assert.equal(serve(parseConfig([], envOf({ HOSTNAME: "box" }))).hostname, "0.0.0.0");
});

Deno.test("envNames lists every variable read, for --allow-env", () => {
  const names = envNames();
  for (const o of OPTIONS) assert.ok(names.includes(envName(o.flag)), o.flag);
  assert.ok(names.includes("PORT"));
  assert.equal(names.length, OPTIONS.length + 1);
  for (const n of names) assert.match(n, /^(CHORUS_[A-Z_]+|PORT)$/);
});

Deno.test("invalid flag values throw a one-line ConfigError naming the flag", () => {
  for (const o of OPTIONS) {
    for (const raw of INVALID[o.key]) {
      // --flag=VALUE: parseArgs refuses "--port -1" as ambiguous before our parser runs.
      const message = configError([`--${o.flag}=${raw}`, ...withPartner(o.key)]);
      assert.ok(message.startsWith(`--${o.flag}: `), `${o.flag} ${raw}: ${message}`);
    }
  }
  assert.equal(
    configError(["--port", "70000"]),
    `--port: expected an integer from 0 to 65535, got "70000"`,
  );
  assert.equal(
    configError(["--log-level", "WARN"]),
    `--log-level: expected one of error, warn, info, debug, got "WARN"`,
  );
  assert.equal(configError(["--hostname", " "]), "--hostname: must not be empty");
  assert.match(configError(["--port", "-1"]), /^Option '--port' argument is ambiguous/);
});

Deno.test("invalid env values throw a one-line ConfigError naming the variable", () => {
  for (const o of OPTIONS) {
    for (const raw of INVALID[o.key]) {
      if (raw === "") continue; // an empty variable counts as unset
      const name = envName(o.flag);
      const partner = envPartner(o.key);
      const message = configError([], { [name]: raw, ...partner });
      assert.ok(message.startsWith(`${name}: `), `${name}=${raw}: ${message}`);
    }
  }
  assert.match(configError([], { PORT: "-1" }), /^PORT: expected an integer from 0 to 65535/);
});

Deno.test("bad command lines throw one-line ConfigErrors", () => {
  assert.match(configError(["--bogus"]), /^Unknown option '--bogus'/);
  assert.match(configError(["--port"]), /^Option '--port <value>' argument missing/);
  assert.match(configError(["stray"]), /^Unexpected argument 'stray'/);
  assert.match(configError(["-x"]), /^Unknown option '-x'/);
});

Deno.test("--help, -h, --version and -V win over everything else", () => {
  assert.deepEqual(parseConfig(["--help"]), { kind: "help" });
  assert.deepEqual(parseConfig(["-h"]), { kind: "help" });
  assert.deepEqual(parseConfig(["--version"]), { kind: "version" });
  assert.deepEqual(parseConfig(["-V"]), { kind: "version" });
  assert.deepEqual(parseConfig(["--port", "abc", "--help"], envOf({ PORT: "x" })), {
    kind: "help",
  });
});

Deno.test("--cert and --key must come together, from flags or env", () => {
  const pairing = "--cert and --key must be given together";
  assert.equal(configError(["--cert", "/c.pem"]), pairing);
  assert.equal(configError(["--key", "/k.pem"]), pairing);
  assert.equal(configError([], { CHORUS_CERT: "/c.pem" }), pairing);
  assert.equal(configError([], { CHORUS_KEY: "/k.pem" }), pairing);
  const both = serve(parseConfig(["--cert", "/c.pem"], envOf({ CHORUS_KEY: "/k.pem" })));
  assert.equal(both.cert, "/c.pem");
  assert.equal(both.key, "/k.pem");
});

Deno.test("--allowed-origins: *, a comma list normalised to origins, or an error", () => {
  const origins = (raw: string) => serve(parseConfig(["--allowed-origins", raw])).allowedOrigins;
  assert.equal(origins("*"), "*");
  assert.equal(origins(" * "), "*");
  assert.deepEqual(origins("https://a.example"), ["https://a.example"]);
  assert.deepEqual(
    origins(" https://a.example , http://b.example:8080,, https://c.example/ "),
    ["https://a.example", "http://b.example:8080", "https://c.example"],
  );
  assert.deepEqual(origins("http://[::1]:3000"), ["http://[::1]:3000"]);
  assert.deepEqual(origins(""), []);
  const fromEnv = (raw: string) =>
    serve(parseConfig([], envOf({ CHORUS_ALLOWED_ORIGINS: raw }))).allowedOrigins;
  assert.equal(fromEnv("*"), "*");
  assert.deepEqual(fromEnv("https://x.example,https://y.example"), [
    "https://x.example",
    "https://y.example",
  ]);
  for (
    const bad of [
      "example.com",
      "https://a.example/app",
      "https://a.example?x=1",
      "*,https://a.example",
      "null",
      "https://ok.example,nonsense",
    ]
  ) {
    assert.match(
      configError(["--allowed-origins", bad]),
      /^--allowed-origins: ".*" is not an origin like https:\/\/example\.com$/,
      bad,
    );
  }
  assert.match(
    configError([], { CHORUS_ALLOWED_ORIGINS: "ftp//x" }),
    /^CHORUS_ALLOWED_ORIGINS: "ftp\/\/x" is not an origin/,
  );
});

Deno.test("usage() lists every flag of OPTIONS with its value, default and env twin", () => {
  const text = usage();
  assert.match(text, /^Usage: chorus \[options\]\n/);
  const lines = text.split("\n");
  for (const o of OPTIONS) {
    const row = lines.find((l) => l.startsWith(`  --${o.flag} ${o.valueName} `));
    assert.ok(row, `--${o.flag} is listed`);
    assert.ok(row.includes(o.description), `${o.flag} description`);
    const envs = [envName(o.flag), o.alsoEnv].filter(Boolean).join(", ");
    assert.ok(row.endsWith(`; env ${envs})`), `${o.flag} env twin: ${row}`);
    assert.ok(row.includes(`(default ${formatDefault(o.key)}; `), `${o.flag} default: ${row}`);
  }
  assert.match(text, /^ {2}-h, --help +print this help and exit$/m);
  assert.match(text, /^ {2}-V, --version +print the version and exit$/m);
  assert.match(text, /--port N .*\(default 8080; env CHORUS_PORT, PORT\)$/m);
  assert.match(
    text,
    /--allowed-origins LIST .*\(default same host; env CHORUS_ALLOWED_ORIGINS\)$/m,
  );
  assert.match(text, /--cert FILE .*\(default none; env CHORUS_CERT\)$/m);
  assert.equal(formatDefault("maxConnections"), "10000");
});

Deno.test("main.ts exits 2 with a one-line error, then the --help hint, for an invalid env value", async () => {
  for (
    const [env, first] of [
      [
        { CHORUS_RATE_LIMIT: "lots" },
        `chorus: CHORUS_RATE_LIMIT: expected an integer from 0 to 1000000, got "lots"`,
      ],
      [
        { CHORUS_LOG_FORMAT: "xml" },
        `chorus: CHORUS_LOG_FORMAT: expected one of text, json, got "xml"`,
      ],
      [{ CHORUS_CERT: "/nowhere/cert.pem" }, "chorus: --cert and --key must be given together"],
    ] as [Record<string, string>, string][]
  ) {
    const out = await runMain([], env);
    assert.equal(out.code, 2, JSON.stringify(env));
    assert.equal(out.stdout, "");
    assert.equal(out.stderr, `${first}\nRun 'chorus --help' for usage.\n`);
  }
});

Deno.test("docs/operations.md lists every option with its env twins, default and description", async () => {
  const doc = await Deno.readTextFile(`${ROOT}docs/operations.md`);
  for (const o of OPTIONS) {
    const row = doc.split("\n").find((l) => l.startsWith(`| \`--${o.flag} ${o.valueName}\``));
    assert.ok(row, `docs/operations.md has a row for --${o.flag}`);
    const cells = row.split("|").map((c) => c.trim());
    const envs = [envName(o.flag), o.alsoEnv].filter(Boolean).map((e) => `\`${e}\``).join(", ");
    assert.equal(cells[2], envs, `--${o.flag} env twins`);
    assert.equal(cells[3], `\`${formatDefault(o.key)}\``, `--${o.flag} default`);
    assert.equal(cells[5], o.description, `--${o.flag} description`);
  }
});

Deno.test("every hook URL needs --webhook-secret, from a flag or the environment", () => {
  for (const flag of ["--webhook-url", "--connect-hook-url", "--publish-hook-url"]) {
    const message = configError([flag, "https://app.example/h"]);
    assert.equal(message, `${flag} needs --webhook-secret to sign its requests`);
    const config = serve(
      parseConfig(
        [flag, "https://app.example/h"],
        (n) => n === "CHORUS_WEBHOOK_SECRET" ? "w".repeat(32) : undefined,
      ),
    );
    assert.equal(config.webhookSecret, "w".repeat(32));
  }
  assert.throws(
    () => configFrom({ publishHookUrl: "https://app.example/m" }),
    /--publish-hook-url needs --webhook-secret/,
  );
});
