/**
 * The compile path: `deno task compile` must build `dist/chorus`, a single binary with the
 * page embedded that serves and relays with only the permissions compiled into it.
 *
 * Building needs Deno's `denort` runtime, which `deno compile` downloads from dl.deno.land
 * unless `DENO_DIR` already holds it. Deno has no run-time skip, so whether the binary can be
 * built is decided when the tests are registered, by a probe that builds nothing: is denort in
 * `DENO_DIR`'s download cache, or does dl.deno.land resolve (2 s timeout)?
 *
 * - If so, the binary test runs: it builds inside the test, and any build failure fails it.
 * - If not, the binary test is registered as ignored with the reason (the denort URL and the
 *   DNS error) in its name; that is the only ignored test `.ci/run` accepts on CI. A second
 *   test then runs the build anyway and proves the probe right: the build must fail at the
 *   denort download and nowhere before it (module graph, type check, the task's flags). Any
 *   other failure fails that test, and so does a build that succeeds.
 *
 * What stays unproven without denort: `deno compile` fetches denort before it reads
 * `--include`, so a broken `--include` only shows where denort can be had.
 */
import assert from "node:assert/strict";
import { DENO, type Finished, rawClient, ROOT, runToEnd, startMain } from "./helpers.ts";

/** Where `deno compile` downloads denort for this Deno and platform. */
const DENORT_URL =
  `https://dl.deno.land/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;

/** Why denort cannot be had here, or undefined when it is cached or its host resolves. */
async function denortUnavailable(): Promise<string | undefined> {
  const info = await runToEnd(DENO, { args: ["info", "--json"], env: { NO_COLOR: "1" } });
  assert.ok(info.success, `deno info --json: ${info.stderr}`);
  const { denoDir } = JSON.parse(info.stdout);
  const cached = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  try {
    await Deno.stat(cached);
    return undefined;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  try {
    await Deno.resolveDns("dl.deno.land", "A", { signal: AbortSignal.timeout(2000) });
    return undefined;
  } catch (err) {
    return `denort cannot be downloaded: ${DENORT_URL}: dns error: ${(err as Error).message}`;
  }
}

/** `deno task compile`, as a user runs it; the download of denort may take a while. */
function build(): Promise<Finished> {
  return runToEnd(DENO, { args: ["task", "compile"], cwd: ROOT, env: { NO_COLOR: "1" } }, 300_000);
}

const noDenort = await denortUnavailable();

Deno.test({
  name: noDenort === undefined
    ? "the compiled binary serves the page and relays a broadcast with no extra permissions"
    : `the compiled binary relays a broadcast (ignored: ${noDenort})`,
  ignore: noDenort !== undefined,
  async fn() {
    const built = await build();
    assert.ok(built.success, `deno task compile failed (exit ${built.code}):\n${built.stderr}`);
    await using main = await startMain([], {}, [`${ROOT}dist/chorus`]);
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

if (noDenort !== undefined) {
  Deno.test("without denort, deno task compile gets past the module graph and type check and fails only at the denort download", async () => {
    const built = await build();
    assert.ok(!built.success, "dist/chorus was built: the denort probe is wrong, fix it");
    const errors = built.stderr.split("\n").filter((l) => /^error\b|\[ERROR\]/.test(l));
    assert.equal(errors.length, 1, `one error, the download's:\n${built.stderr}`);
    assert.ok(
      built.stderr.includes(`error sending request for url (${DENORT_URL})`),
      `the download of ${DENORT_URL} failed:\n${built.stderr}`,
    );
    assert.match(built.stderr, /dns error/, "for the reason the probe found");
  });
}
