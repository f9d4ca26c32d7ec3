/** The docs copy the defaults table; these tests fail when code and docs drift apart. */
import assert from "node:assert/strict";
import { envName, formatDefault, OPTIONS } from "../src/config.ts";
import { ROOT } from "./helpers.ts";

Deno.test("the README options table lists every flag with its env twins and default", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  for (const o of OPTIONS) {
    const row = readme.split("\n").find((l) => l.startsWith(`| \`--${o.flag} `));
    assert.ok(row, `README has a row for --${o.flag}`);
    const cells = row.split("|").map((c) => c.trim());
    assert.ok(cells[2]!.includes(`\`${envName(o.flag)}\``), `--${o.flag} env twin`);
    if (o.alsoEnv) {
      assert.ok(cells[2]!.includes(`\`${o.alsoEnv}\``), `--${o.flag} also ${o.alsoEnv}`);
    }
    assert.equal(cells[3], `\`${formatDefault(o.key)}\``, `--${o.flag} default`);
  }
});

Deno.test("docs/protocol.md documents every error code the server can send", async () => {
  const doc = await Deno.readTextFile(`${ROOT}docs/protocol.md`);
  const source = await Deno.readTextFile(`${ROOT}src/protocol.ts`);
  const union = source.slice(
    source.indexOf("export type ErrorCode"),
    source.indexOf(";", source.indexOf("export type ErrorCode")),
  );
  const codes = [...union.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]);
  assert.ok(codes.length >= 6);
  for (const code of codes) {
    assert.ok(doc.includes(`\`${code}\``), `docs/protocol.md mentions ${code}`);
  }
});

Deno.test("the tests start main.ts exactly as deno task start does", async () => {
  const { START_COMMAND } = await import("./helpers.ts");
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.equal(config.tasks.start, ["deno", ...START_COMMAND.slice(1)].join(" "));
});
