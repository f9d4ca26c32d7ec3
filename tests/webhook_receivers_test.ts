/**
 * The verification recipes of `docs/hooks.md`, proven: the documented Node.js and Deno
 * functions are the ones in `examples/webhook_receiver.mjs` and `examples/webhook_receiver.ts`,
 * and each example, run as a user runs it (`node …`, `deno run …`), accepts the requests of a
 * real chorus signed with its secret and refuses those signed with another.
 */
import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import { C } from "../src/metrics.ts";
import { chatClient, DENO, Inbox, killIfRunning, ROOT, startServer, waitFor } from "./helpers.ts";

const SECRET = "webhook-secret-for-tests-0123456789";

/** A receiver example running as a child process, its stdout as lines. */
interface Example {
  port: number;
  lines: Inbox<string>;
  stop(): Promise<void>;
}

async function runExample(command: string, args: string[]): Promise<Example> {
  const child = new Deno.Command(command, {
    args,
    cwd: ROOT,
    env: { CHORUS_WEBHOOK_SECRET: SECRET, PORT: "0" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = new Inbox<string>();
  const pumped = (async () => {
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const line of parts) lines.push(line);
    }
  })();
  const stop = async () => {
    killIfRunning(child, "SIGTERM");
    await child.status;
    await pumped;
  };
  const first = await lines.next("the listening line").catch(async (err) => {
    await stop();
    throw err;
  });
  const port = Number(/^webhook receiver listening on (\d+)$/.exec(first)?.[1]);
  assert.ok(port > 0, first);
  return { port, lines, stop };
}

/** Whether `node` runs here; `.ci/run` installs Deno with npm, so CI always has it. */
async function nodeMissing(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("node", { args: ["--version"], stdout: "null" }).output();
    return out.success ? undefined : "node --version failed";
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    return "node is not installed";
  }
}

/** A chorus posting to `port` with `secret`, whose member comes and goes in `room`. */
async function chorusPosting(port: number, secret: string, room: string) {
  const config: Partial<Config> = {
    webhookUrl: `http://127.0.0.1:${port}/`,
    webhookSecret: secret,
    webhookVacateDelay: 0,
  };
  const server = startServer(config, {
    webhookTimings: { batchMs: 5, retryBaseMs: 5, retryCapMs: 20, shutdownMs: 200 },
  });
  const { client, welcome } = await chatClient(server.ws(room));
  return { server, client, welcome };
}

async function provesRecipe(example: Example): Promise<void> {
  try {
    const { server, client, welcome } = await chorusPosting(example.port, SECRET, "/recipe");
    const occupied = JSON.parse(await example.lines.next("the verified occupied event"));
    assert.deepEqual({ ...occupied, ts: 0 }, { type: "room.occupied", room: "/recipe", ts: 0 });
    const joined = JSON.parse(await example.lines.next("the verified joined event"));
    assert.equal(joined.id, welcome.id);
    await client.close();
    await server.close();

    const rest = [await example.lines.next("left"), await example.lines.next("vacated")];
    assert.deepEqual(rest.map((l) => JSON.parse(l).type), ["member.left", "room.vacated"]);

    const forged = await chorusPosting(example.port, SECRET.replace("0", "1"), "/forged");
    assert.match(await example.lines.next("a refusal"), /^refused [0-9a-f-]{36}$/);
    await waitFor(() => forged.server.hub.metrics.row[C.webhookRetries]! > 0, "a retry");
    assert.equal(forged.server.hub.metrics.row[C.webhookDelivered], 0);
    await forged.client.close();
    await forged.server.close();
  } finally {
    await example.stop();
  }
}

Deno.test("examples/webhook_receiver.ts (Deno) verifies chorus' requests and refuses another secret's", async () => {
  await provesRecipe(
    await runExample(DENO, [
      "run",
      "--allow-net",
      "--allow-env=CHORUS_WEBHOOK_SECRET,PORT",
      "examples/webhook_receiver.ts",
    ]),
  );
});

const noNode = await nodeMissing();

Deno.test({
  name:
    `examples/webhook_receiver.mjs (Node.js) verifies chorus' requests and refuses another secret's${
      noNode ? ` (ignored: ${noNode})` : ""
    }`,
  ignore: noNode !== undefined,
  async fn() {
    await provesRecipe(await runExample("node", ["examples/webhook_receiver.mjs"]));
  },
});

/** The body of the first fenced block of `lang` after `heading` in `docs/hooks.md`. */
function documented(doc: string, heading: string, lang: string): string {
  const from = doc.indexOf(heading);
  assert.ok(from >= 0, `docs/hooks.md has "${heading}"`);
  const fence = "```" + lang + "\n";
  const start = doc.indexOf(fence, from);
  assert.ok(start >= 0, `a ${lang} block after "${heading}"`);
  return doc.slice(start + fence.length, doc.indexOf("\n```", start));
}

Deno.test("the recipes in docs/hooks.md are the examples' code, word for word", async () => {
  const doc = await Deno.readTextFile(`${ROOT}docs/hooks.md`);
  for (
    const [heading, lang, file] of [
      ["#### Node.js", "js", "examples/webhook_receiver.mjs"],
      ["#### Deno", "ts", "examples/webhook_receiver.ts"],
    ]
  ) {
    const code = documented(doc, heading!, lang!);
    const example = await Deno.readTextFile(`${ROOT}${file}`);
    assert.ok(code.includes("export function") || code.includes("export async function"));
    for (const part of code.split("\n\n")) {
      assert.ok(example.includes(part), `${file} has this part of the ${heading} block:\n${part}`);
    }
  }
});
