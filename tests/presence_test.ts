/** Presence without sockets: every change returns the event to announce. */
import assert from "node:assert/strict";
import { Presence, type Present } from "../src/presence.ts";

const member = (id: string, name = id): Present => ({ id, name, mode: "chat" });

Deno.test("local joins, leaves and renames return the events to announce", () => {
  const p = new Presence();
  const a = member("a", "Ann");
  assert.deepEqual(p.join("/r", a), { type: "join", id: "a", name: "Ann" });
  assert.equal(p.has("/r", a), true);
  assert.deepEqual(p.rename(a, "Anna"), { type: "rename", id: "a", name: "Anna", oldName: "Ann" });
  assert.equal(a.name, "Anna");
  assert.deepEqual(p.leave("/r", a), { type: "leave", id: "a", name: "Anna" });
  assert.equal(p.leave("/r", a), undefined, "a second leave announces nothing");
  assert.equal(p.has("/r", a), false);
  assert.equal(p.rooms, 0, "an empty room is forgotten");
});

Deno.test("members lists this hub's members first in join order, then other hubs'", () => {
  const p = new Presence();
  p.remoteJoin("n2", "/r", { id: "x", name: "X", mode: "raw" });
  p.join("/r", member("b"));
  p.join("/r", member("a"));
  p.join("/other", member("c"));
  assert.deepEqual(p.members("/r").map((m) => m.id), ["b", "a", "x"]);
  assert.equal(p.rooms, 2);
  assert.equal(p.remoteMembers, 1);
  assert.deepEqual(p.snapshot(), [
    ["/r", [{ id: "b", name: "b", mode: "chat" }, { id: "a", name: "a", mode: "chat" }]],
    ["/other", [{ id: "c", name: "c", mode: "chat" }]],
  ]);
  assert.deepEqual(p.directory().get("/r")?.map((m) => m.id), ["b", "a", "x"]);
});

Deno.test("occupied counts members of any hub; a remote leave of a stranger is nothing", () => {
  const p = new Presence();
  assert.equal(p.occupied("/r"), false);
  p.remoteJoin("n2", "/r", { id: "x", name: "X", mode: "chat" });
  assert.equal(p.occupied("/r"), true);
  assert.equal(p.remoteLeave("/r", "nobody"), undefined);
  assert.deepEqual(p.remoteLeave("/r", "x"), { type: "leave", id: "x", name: "X" });
  assert.equal(p.occupied("/r"), false);
});

Deno.test("a hub's new member list yields only the differences: joins, leaves, renames", () => {
  const p = new Presence();
  p.remoteJoin("n2", "/r", { id: "stays", name: "S", mode: "chat" });
  p.remoteJoin("n2", "/r", { id: "renamed", name: "Old", mode: "chat" });
  p.remoteJoin("n2", "/gone", { id: "left", name: "L", mode: "raw" });
  p.remoteJoin("n3", "/r", { id: "other-node", name: "O", mode: "chat" });
  const changes = p.replaceNode("n2", [["/r", [
    { id: "stays", name: "S", mode: "chat" },
    { id: "renamed", name: "New", mode: "chat" },
    { id: "new", name: "N", mode: "chat" },
  ]]]);
  assert.deepEqual(changes, [
    ["/r", { type: "rename", id: "renamed", name: "New", oldName: "Old" }],
    ["/r", { type: "join", id: "new", name: "N" }],
    ["/gone", { type: "leave", id: "left", name: "L" }],
  ]);
  assert.deepEqual(p.members("/r").map((m) => m.id).sort(), [
    "new",
    "other-node",
    "renamed",
    "stays",
  ]);
  assert.equal(p.occupied("/gone"), false);
});

Deno.test("forgetting a hub returns a leave for each of its members, and only its", () => {
  const p = new Presence();
  p.remoteJoin("n2", "/a", { id: "1", name: "One", mode: "chat" });
  p.remoteJoin("n2", "/b", { id: "2", name: "Two", mode: "raw" });
  p.remoteJoin("n3", "/a", { id: "3", name: "Three", mode: "chat" });
  assert.deepEqual(p.forgetNode("n2"), [
    ["/a", { type: "leave", id: "1", name: "One" }],
    ["/b", { type: "leave", id: "2", name: "Two" }],
  ]);
  assert.deepEqual(p.members("/a"), [{ id: "3", name: "Three" }]);
  assert.equal(p.remoteMembers, 1);
});

Deno.test("count and a bounded sample cost no more than asked, on every hub", () => {
  const p = new Presence();
  for (let i = 0; i < 5; i++) p.join("/r", member(`l${i}`));
  for (let i = 0; i < 5; i++) p.remoteJoin("n2", "/r", { id: `r${i}`, name: "R", mode: "raw" });
  assert.equal(p.count("/r"), 10);
  assert.equal(p.count("/empty"), 0);
  assert.deepEqual(p.members("/r", 3).map((m) => m.id), ["l0", "l1", "l2"]);
  assert.deepEqual(p.members("/r", 7).map((m) => m.id), ["l0", "l1", "l2", "l3", "l4", "r0", "r1"]);
  p.remoteJoin("n2", "/a", { id: "x", name: "X", mode: "chat" });
  assert.deepEqual([...p.counts()], [["/a", 1], ["/r", 10]]);
});

Deno.test("paging by id returns every member exactly once, one user's tabs on one page", () => {
  const p = new Presence();
  const ids = ["m", "c", "x", "a", "c", "q", "b"]; // "c" is one user in two tabs
  ids.forEach((id, i) => i % 2 ? p.join("/r", member(id)) : p.remoteJoin("n", "/r", member(id)));
  // Two remote members with one id are one entry on the other hub: count what presence holds.
  const seen: string[] = [];
  let after: string | undefined;
  let pages = 0;
  for (;;) {
    const page = p.page("/r", after, 2);
    pages++;
    seen.push(...page.members.map((m) => m.id));
    if (page.next === null) break;
    after = page.next;
  }
  assert.deepEqual(seen, [...seen].sort(), "ordered by id");
  assert.deepEqual(seen.length, p.count("/r"), "every member exactly once");
  assert.deepEqual(new Set(seen), new Set(ids));
  assert.ok(pages >= 3, `${pages} pages of at most 2 (plus equal ids)`);
  assert.deepEqual(p.page("/r", "z", 5), { members: [], next: null });
  assert.deepEqual(p.page("/none", undefined, 5), { members: [], next: null });
});
