/**
 * TLS: `main.ts --cert --key` serves HTTPS and WSS with a self-signed certificate made by
 * `openssl` at test time; unreadable certificate files are a configuration error (exit 2).
 *
 * Deno's `WebSocket` cannot be given a custom CA, so the WSS clients are npm `ws` clients with
 * the `ca` option.
 */
import assert from "node:assert/strict";
// @ts-types="@types/ws"
import WebSocketNode from "ws";
import { Inbox, ROOT, runToEnd, START_COMMAND, startMain, waitFor } from "./helpers.ts";

/**
 * `deno task start`'s command (from the helpers) with `dir` added to its read access, as an
 * operator adds the certificate directory.
 */
function startCommand(dir?: string): [string, string[]] {
  const args = START_COMMAND.slice(1).map((a) =>
    dir !== undefined && a.startsWith("--allow-read=") ? `${a},${dir}` : a
  );
  assert.ok(args.some((a) => a.startsWith("--allow-read=")), "START_COMMAND grants --allow-read");
  return [START_COMMAND[0]!, args];
}

/** Make a self-signed P-256 certificate for localhost and 127.0.0.1, or say why we cannot. */
async function makeCert(): Promise<{ dir: string; cert: string; key: string; pem: string }> {
  const dir = await Deno.makeTempDir({ prefix: "chorus-tls-" });
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "key.pem",
      "-out",
      "cert.pem",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      // openssl marks a self-signed certificate CA:TRUE by default, and rustls (Deno's fetch)
      // refuses a CA certificate as a server's own: "CaUsedAsEndEntity".
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "extendedKeyUsage=serverAuth",
    ],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `openssl failed: ${new TextDecoder().decode(out.stderr)}`);
  const cert = `${dir}/cert.pem`;
  return { dir, cert, key: `${dir}/key.pem`, pem: await Deno.readTextFile(cert) };
}

async function hasOpenssl(): Promise<boolean> {
  try {
    return (await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output())
      .success;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

const openssl = await hasOpenssl();

/** An npm `ws` client trusting `ca`, with awaited frames and close. */
async function wssClient(url: string, ca: string) {
  const socket = new WebSocketNode(url, { ca });
  const frames = new Inbox<string>();
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() }))
  );
  socket.on("message", (data) => frames.push(data.toString()));
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  return { socket, frames, closed };
}

for (const workers of [1, 2]) {
  const what = workers === 1 ? "" : ` with --workers ${workers}`;
  Deno.test({
    name: openssl
      ? `--cert/--key serve HTTPS and a WSS broadcast${what}`
      : `--cert/--key serve HTTPS and WSS${what} (ignored: openssl is not installed)`,
    ignore: !openssl,
    async fn() {
      const { dir, cert, key, pem } = await makeCert();
      const client = Deno.createHttpClient({ caCerts: [pem] });
      try {
        const [deno, denoArgs] = startCommand(dir);
        await using main = await startMain(
          ["--cert", cert, "--key", key, "--workers", String(workers)],
          {},
          [deno, ...denoArgs],
        );
        assert.equal(main.url, `https://127.0.0.1:${main.port}/`, "the listening line says https");
        const health = async () =>
          await (await fetch(`https://127.0.0.1:${main.port}/healthz`, { client })).json();

        for (const host of ["127.0.0.1", "localhost"]) {
          const res = await fetch(`https://${host}:${main.port}/healthz`, { client });
          assert.equal(res.status, 200, host);
          assert.equal((await res.json()).status, "ok");
        }
        const page = await fetch(main.url, { client });
        assert.equal(page.status, 200);
        assert.match(await page.text(), /<html/i);

        // Plain HTTP on the TLS port is not served.
        await assert.rejects(fetch(`http://127.0.0.1:${main.port}/healthz`));

        const a = await wssClient(`wss://localhost:${main.port}/secure`, pem);
        const b = await wssClient(`wss://127.0.0.1:${main.port}/secure`, pem);
        await waitFor(async () => (await health()).connections === 2, "2 connections");
        a.socket.send("over tls");
        assert.equal(await b.frames.next("b's frame"), "over tls");
        assert.equal(await a.frames.next("a's own frame"), "over tls");

        // Without the CA the certificate is refused.
        const untrusting = new WebSocketNode(`wss://127.0.0.1:${main.port}/secure`);
        const err = await new Promise<Error>((resolve) => untrusting.once("error", resolve));
        assert.match(err.message, /self[- ]signed|certificate/i);

        main.child.kill("SIGTERM");
        const [ca, cb, out] = await Promise.all([a.closed, b.closed, main.output()]);
        assert.deepEqual(ca, { code: 1001, reason: "server shutting down" });
        assert.deepEqual(cb, { code: 1001, reason: "server shutting down" });
        assert.equal(out.code, 0);
        assert.equal(out.stdout, "");
      } finally {
        client.close();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: openssl
    ? "--cert pointing at a missing file exits 2 with a one-line error"
    : "--cert pointing at a missing file exits 2 (ignored: openssl is not installed)",
  ignore: !openssl,
  async fn() {
    const { dir, key } = await makeCert();
    try {
      const missing = `${dir}/missing.pem`;
      const [deno, args] = startCommand(dir);
      const out = await runToEnd(deno, {
        args: [...args, "--cert", missing, "--key", key],
        cwd: ROOT,
        env: {},
      });
      const stderr = out.stderr;
      assert.equal(out.code, 2, stderr);
      assert.equal(out.stdout, "", "never listened");
      const lines = stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, `one line: ${stderr}`);
      assert.match(lines[0]!, new RegExp(`^chorus: --cert: cannot read ${missing}: `));
      assert.match(lines[0]!, /No such file or directory/);
      assert.doesNotMatch(lines[0]!, /--allow-read/, "no permission hint when it is not one");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: openssl
    ? "--cert without --allow-read exits 2 with a one-line --allow-read hint"
    : "--cert without --allow-read exits 2 (ignored: openssl is not installed)",
  ignore: !openssl,
  async fn() {
    const { dir, cert, key } = await makeCert();
    try {
      // Exactly what `deno task start` grants: read access to chorus' own src/ and static/ only.
      const [deno, args] = startCommand();
      const out = await runToEnd(deno, {
        args: [...args, "--cert", cert, "--key", key],
        cwd: ROOT,
        env: {},
      });
      assert.equal(out.code, 2, out.stderr);
      assert.equal(out.stdout, "");
      const lines = out.stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, `one line: ${out.stderr}`);
      assert.match(lines[0]!, new RegExp(`^chorus: --cert: cannot read ${cert}: `));
      assert.ok(lines[0]!.endsWith(` (grant --allow-read=${cert})`), lines[0]!);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: openssl
    ? "a --cert that is no certificate, or a --key of another pair, exits 2 with one line"
    : "unusable --cert/--key exit 2 (ignored: openssl is not installed)",
  ignore: !openssl,
  async fn() {
    const { dir, cert, key } = await makeCert();
    try {
      const garbage = `${dir}/garbage.pem`;
      await Deno.writeTextFile(garbage, "this is not PEM\n");
      const otherKey = `${dir}/other-key.pem`;
      const gen = await new Deno.Command("openssl", {
        args: [
          "genpkey",
          "-algorithm",
          "EC",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-out",
          otherKey,
        ],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.ok(gen.success);
      // README: "Invalid values stop the server at start with a one-line error and exit status 2."
      const problems: string[] = [];
      for (
        const [args, names] of [
          [["--cert", garbage, "--key", key], /--cert|garbage\.pem/],
          [["--cert", cert, "--key", garbage], /--key|garbage\.pem/],
          [["--cert", cert, "--key", otherKey], /--key|--cert|other-key\.pem/],
        ] as [string[], RegExp][]
      ) {
        const [deno, denoArgs] = startCommand(dir);
        const child = new Deno.Command(deno, {
          args: [...denoArgs, ...["--port", "0", "--hostname", "127.0.0.1", ...args]],
          cwd: ROOT,
          env: { NO_COLOR: "1" },
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        // Should it listen after all, do not hang: stop it.
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        const out = await child.output();
        clearTimeout(timer);
        const stdout = new TextDecoder().decode(out.stdout);
        const stderr = new TextDecoder().decode(out.stderr);
        const lines = stderr.split("\n").filter((l) => l !== "");
        const label = `${args.map((a) => a.replace(dir, "DIR")).join(" ")} → exit ${out.code}, ` +
          `stderr ${JSON.stringify(stderr.replaceAll(dir, "DIR").slice(0, 300))}`;
        if (stdout !== "") problems.push(`listened: ${label}`);
        else if (lines.length !== 1 || !/^chorus: /.test(lines[0]!)) {
          problems.push(`not one "chorus: " line: ${label}`);
        } else if (!names.test(lines[0]!)) problems.push(`does not name the culprit: ${label}`);
        else if (out.code !== 2) problems.push(`exit is not 2: ${label}`);
      }
      assert.deepEqual(problems, [], problems.join("\n"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
