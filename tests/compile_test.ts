/**
 * The compile path: `deno task compile` must build `dist/chorus`, a single binary with the
 * page embedded. Building needs Deno's `denort` runtime, which `deno compile` downloads; where
 * that is impossible the test is registered as ignored with the reason in its name.
 */
import assert from "node:assert/strict";
import { DENO, rawClient, ROOT, startMain } from "./helpers.ts";

const build = await new Deno.Command(DENO, {
  args: ["task", "compile"],
  cwd: ROOT,
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const why = new TextDecoder().decode(build.stderr).split("\n")
  .find((l) => /error sending request|dns error|Connect/.test(l))?.trim() ??
  new TextDecoder().decode(build.stderr).split("\n").find((l) => l.startsWith("error"))?.trim();

Deno.test({
  name: build.success
    ? "the compiled binary serves the page and relays a broadcast with no extra permissions"
    : `the compiled binary relays a broadcast (ignored: deno compile cannot build it here: ${why})`,
  ignore: !build.success,
  async fn() {
    const main = await startMain([], {}, [`${ROOT}dist/chorus`]);
    const page = await fetch(main.url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const a = await rawClient(`ws://127.0.0.1:${main.port}/`);
    const b = await rawClient(`ws://127.0.0.1:${main.port}/`);
    a.send("compiled");
    assert.equal(await b.text(), "compiled");
    main.child.kill("SIGTERM");
    assert.deepEqual(await a.closed, { code: 1001, reason: "server shutting down" });
    assert.equal((await main.output()).code, 0);
  },
});
