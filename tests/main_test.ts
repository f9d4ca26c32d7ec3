import assert from "node:assert/strict";
import { killIfRunning, rawClient, runMain, startMain } from "./helpers.ts";

Deno.test("main prints exactly one listening line and relays a broadcast", async () => {
  await using main = await startMain();
  assert.match(main.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const a = await rawClient(`ws://127.0.0.1:${main.port}/x`);
  const b = await rawClient(`ws://127.0.0.1:${main.port}/x`);
  const health = await (await fetch(`${main.url}healthz`)).json();
  assert.equal(health.connections, 2);
  a.send("through main");
  assert.equal(await b.text(), "through main");
  main.child.kill("SIGTERM");
  const [ca, cb, out] = await Promise.all([a.closed, b.closed, main.output()]);
  assert.deepEqual(ca, { code: 1001, reason: "server shutting down" });
  assert.deepEqual(cb, { code: 1001, reason: "server shutting down" });
  assert.equal(out.code, 0);
  assert.equal(out.stdout, "", "nothing after the listening line on stdout");
});

Deno.test("SIGINT also shuts down cleanly with 1001 and exit 0", async () => {
  await using main = await startMain();
  const a = await rawClient(`ws://127.0.0.1:${main.port}/`);
  main.child.kill("SIGINT");
  assert.deepEqual(await a.closed, { code: 1001, reason: "server shutting down" });
  assert.equal((await main.output()).code, 0);
});

Deno.test("PORT from the environment is used and --port wins over it", async () => {
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env=PORT,CHORUS_*", "main.ts", "--hostname", "127.0.0.1"],
    cwd: new URL("..", import.meta.url).pathname,
    env: { PORT: String(port), CHORUS_STORE: "memory" },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const { value } = await reader.read();
    assert.equal(value, `chorus listening on http://127.0.0.1:${port}/\n`);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    killIfRunning(child);
    await reader.cancel();
  }
  await using flagged = await startMain([], { PORT: String(port) }); // startMain passes --port 0
  assert.notEqual(flagged.port, port);
  flagged.child.kill("SIGTERM");
  assert.equal((await flagged.output()).code, 0);
});

Deno.test("a bad flag prints exactly the error line and the --help hint, and exits 2", async () => {
  const out = await runMain(["--bogus"]);
  assert.equal(out.code, 2);
  assert.equal(out.stdout, "");
  assert.equal(out.stderr, "chorus: Unknown option '--bogus'\nRun 'chorus --help' for usage.\n");
});

Deno.test("bad flags and values exit 2 with one error line and the --help hint", async () => {
  for (
    const [args, env, pattern] of [
      [["--bogus"], {}, /^chorus: Unknown option '--bogus'/],
      [
        ["--port", "70000"],
        {},
        /^chorus: --port: expected an integer from 0 to 65535, got "70000"$/m,
      ],
      [["--port", "abc"], {}, /^chorus: --port: expected an integer/],
      [["--port"], {}, /^chorus: Option '--port <value>' argument missing/],
      [["stray"], {}, /^chorus: Unexpected argument 'stray'/],
      [[], { PORT: "-1" }, /^chorus: PORT: expected an integer/],
      [[], { CHORUS_HISTORY: "many" }, /^chorus: CHORUS_HISTORY: expected an integer/],
    ] as [string[], Record<string, string>, RegExp][]
  ) {
    const out = await runMain(args, env);
    assert.equal(out.code, 2, `${args.join(" ")} ${JSON.stringify(env)}`);
    const lines = out.stderr.split("\n");
    assert.equal(lines.length, 3, out.stderr);
    assert.match(lines[0]!, pattern);
    assert.equal(lines[1], "Run 'chorus --help' for usage.");
    assert.equal(lines[2], "");
    assert.equal(out.stdout, "");
  }
});

Deno.test("--help and --version print to stdout and exit 0", async () => {
  const help = await runMain(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: chorus \[options\]/);
  assert.match(help.stdout, /--port N/);
  const version = await runMain(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^chorus \d+\.\d+\.\d+\n$/);
});
