/**
 * `src/log.ts`: level threshold, text and JSON formats, the warn rate limit with its
 * `suppressed=N` report; and what `main.ts` really writes to stderr.
 *
 * The warn limiter's token bucket reads `performance.now` and cannot be given a clock, so the
 * flood tests send their burst synchronously: the bucket refills `rate` tokens per second, and
 * a synchronous loop of a few dozen calls finishes long before one more token (1/rate seconds)
 * could accrue.
 */
import assert from "node:assert/strict";
import { createLogger, LOG_LEVELS, type LoggerOptions } from "../src/log.ts";
import { rawClient, startMain, UPGRADE_HEADERS } from "./helpers.ts";

const EPOCH = "1970-01-01T00:00:00.000Z";

function capture(options: Partial<LoggerOptions> = {}) {
  const lines: string[] = [];
  const log = createLogger({
    level: "debug",
    format: "text",
    now: () => 0,
    write: (l) => lines.push(l),
    ...options,
  });
  return { log, lines };
}

Deno.test("the level threshold drops everything less severe than the level", () => {
  const expected: Record<string, string[]> = {
    error: ["error"],
    warn: ["error", "warn"],
    info: ["error", "warn", "info"],
    debug: ["error", "warn", "info", "debug"],
  };
  assert.deepEqual([...LOG_LEVELS], ["error", "warn", "info", "debug"]);
  for (const level of LOG_LEVELS) {
    const { log, lines } = capture({ level, format: "json" });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    const got = lines.map((l) => JSON.parse(l).level).sort();
    assert.deepEqual(got, [...expected[level]!].sort(), `level ${level}`);
  }
});

Deno.test("text format: time, padded upper-case level, message, then key=value fields", () => {
  const { log, lines } = capture();
  log.info("hello");
  log.warn("upgrade refused", { status: 403, ok: false, origin: "http://evil.example" });
  log.error("quoted", { a: "two words", b: 'say "hi"', c: "k=v", d: undefined, e: "" });
  log.debug("injected", { v: "line1\nline2" });
  assert.deepEqual(lines, [
    `${EPOCH} INFO  hello`,
    `${EPOCH} WARN  upgrade refused status=403 ok=false origin=http://evil.example`,
    `${EPOCH} ERROR quoted a="two words" b="say \\"hi\\"" c="k=v" e=`,
    `${EPOCH} DEBUG injected v="line1\\nline2"`,
  ]);
  for (const l of lines) assert.ok(!l.includes("\n"), "one physical line per log line");
});

Deno.test("json format: one object per line with time, level, msg and the fields", () => {
  const { log, lines } = capture({ format: "json", now: () => Date.UTC(2025, 0, 2, 3, 4, 5, 6) });
  log.warn("upgrade refused", { status: 403, ip: "127.0.0.1", origin: undefined, ok: true });
  log.info("multi\nline", { v: 'a"b' });
  assert.equal(lines.length, 2);
  assert.deepEqual(JSON.parse(lines[0]!), {
    time: "2025-01-02T03:04:05.006Z",
    level: "warn",
    msg: "upgrade refused",
    status: 403,
    ip: "127.0.0.1",
    ok: true,
  });
  assert.deepEqual(Object.keys(JSON.parse(lines[0]!)).slice(0, 3), ["time", "level", "msg"]);
  assert.deepEqual(JSON.parse(lines[1]!), {
    time: "2025-01-02T03:04:05.006Z",
    level: "info",
    msg: "multi\nline",
    v: 'a"b',
  });
  for (const l of lines) assert.ok(!l.includes("\n"));
});

Deno.test("a warn flood is cut to the burst and the next line reports suppressed=N", () => {
  const burst = 3;
  const { log, lines } = capture({ maxWarnPerSecond: burst });
  for (let i = 0; i < 30; i++) log.warn("upgrade refused", { n: i });
  assert.deepEqual(lines, [0, 1, 2].map((n) => `${EPOCH} WARN  upgrade refused n=${n}`));
  // Errors and infos are never limited; the first line of any level carries the count, once.
  log.info("shutting down");
  log.error("boom");
  assert.deepEqual(lines.slice(burst), [
    `${EPOCH} INFO  shutting down suppressed=27`,
    `${EPOCH} ERROR boom`,
  ]);
});

Deno.test("suppressed=N in json is a number, and it is kept for a line the level lets through", () => {
  const { log, lines } = capture({ level: "warn", format: "json", maxWarnPerSecond: 2 });
  for (let i = 0; i < 12; i++) log.warn("w");
  assert.equal(lines.length, 2);
  log.info("below the threshold: not written, must not swallow the count");
  log.debug("nor this");
  log.error("e", { x: 1 });
  assert.equal(lines.length, 3);
  assert.deepEqual(JSON.parse(lines[2]!), {
    time: EPOCH,
    level: "error",
    msg: "e",
    x: 1,
    suppressed: 10,
  });
});

Deno.test("the default warn limit is 20 lines per second", () => {
  const { log, lines } = capture();
  for (let i = 0; i < 100; i++) log.warn("w");
  assert.equal(lines.length, 20);
  log.error("e");
  assert.equal(lines[20], `${EPOCH} ERROR e suppressed=80`);
});

Deno.test("errors are never rate limited", () => {
  const { log, lines } = capture({ maxWarnPerSecond: 1 });
  for (let i = 0; i < 50; i++) log.error("e");
  assert.equal(lines.length, 50);
  assert.ok(lines.every((l) => !l.includes("suppressed")));
});

for (const workers of [1, 2]) {
  Deno.test(`main.ts --workers ${workers} --log-format json --log-level warn logs a refused upgrade as one JSON line`, async () => {
    await using main = await startMain([
      "--log-format",
      "json",
      "--log-level",
      "warn",
      "--workers",
      String(workers),
    ]);
    const res = await fetch(`${main.url}room`, {
      headers: {
        ...UPGRADE_HEADERS,
        origin: "http://evil.example",
      },
    });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error.code, "forbidden_origin");
    main.child.kill("SIGTERM");
    const out = await main.output();
    assert.equal(out.code, 0);
    assert.equal(out.stdout, "");
    const lines = out.stderr.split("\n").filter((l) => l !== "");
    assert.equal(lines.length, 1, `exactly one line (no info "shutting down"): ${out.stderr}`);
    const entry = JSON.parse(lines[0]!);
    assert.match(entry.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual({ ...entry, time: "T" }, {
      time: "T",
      level: "warn",
      msg: "upgrade refused",
      status: 403,
      code: "forbidden_origin",
      ip: "127.0.0.1",
      origin: "http://evil.example",
    });
  });
}

Deno.test("main.ts at info level writes nothing per message, only the shutdown lines", async () => {
  await using main = await startMain(["--log-level", "info"]);
  const a = await rawClient(`ws://127.0.0.1:${main.port}/chat`);
  const b = await rawClient(`ws://127.0.0.1:${main.port}/chat`);
  for (let i = 0; i < 25; i++) a.send(`message ${i}`);
  for (let i = 0; i < 25; i++) assert.equal(await b.text(), `message ${i}`);
  for (let i = 0; i < 25; i++) assert.equal(await a.text(), `message ${i}`, "the sender too");
  b.send(new Uint8Array([1, 2, 3]));
  assert.ok((await a.frames.next("binary")) instanceof ArrayBuffer);
  main.child.kill("SIGTERM");
  const [closedA, , out] = await Promise.all([a.closed, b.closed, main.output()]);
  assert.equal(closedA.code, 1001);
  assert.equal(out.code, 0);
  const lines = out.stderr.split("\n").filter((l) => l !== "");
  const time = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`;
  assert.equal(lines.length, 2, `only the shutdown lines: ${out.stderr}`);
  assert.match(lines[0]!, new RegExp(`^${time} INFO  signal received signal=SIGTERM$`));
  assert.match(lines[1]!, new RegExp(`^${time} INFO  shutting down connections=2$`));
});
