/** The close table in `src/close.ts` and its mirror in `docs/protocol.md`. */
import assert from "node:assert/strict";
import { DISCONNECTS } from "../src/close.ts";
import { DISCONNECT_REASONS } from "../src/metrics.ts";
import { ROOT } from "./helpers.ts";

Deno.test("docs/protocol.md lists every disconnect reason with the close frame the code sends", async () => {
  const doc = await Deno.readTextFile(`${ROOT}docs/protocol.md`);
  const rows = new Map<string, [string, string]>();
  for (const m of doc.matchAll(/^\| `([a-z_]+)` +\| ([^|]+?) +\| ([^|]+?) +\|/gm)) {
    rows.set(m[1]!, [m[2]!, m[3]!]);
  }
  for (const reason of DISCONNECT_REASONS) {
    const frame = DISCONNECTS[reason];
    const expected = frame === null ? ["—", "—"] : [String(frame.code), `\`${frame.reason}\``];
    assert.deepEqual(rows.get(reason), expected, reason);
  }
});
