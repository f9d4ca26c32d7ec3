// @ts-check
/// <reference lib="dom" />
/**
 * The open room's members, {@link MEMBERS_PAGE} at a time, each with a Disconnect button
 * behind a confirmation.
 * @module
 */
import { apiJson, q } from "./api.js";
import { confirmAction, control } from "./controls.js";
import { current } from "./detail.js";
import { h, keepFocus, ui } from "./dom.js";
import { NUMBER } from "./format.js";
import { failed, setError } from "./status.js";
/** @import { Detail } from "./detail.js" */

const MEMBERS_PAGE = 100;

/** @typedef {{ id: string, name: string, mode: string }} Member */

/**
 * Load a page of members: the first (`reset`) or the next one.
 * @param {boolean} reset @param {AbortSignal} signal
 */
export async function loadMembers(reset, signal) {
  const open = current.detail;
  if (!open) return;
  const after = reset ? "" : `&after=${q(open.membersNext ?? "")}`;
  try {
    const page = await apiJson(
      `/api/rooms/members?room=${q(open.room)}&limit=${MEMBERS_PAGE}${after}`,
      {},
      signal,
    );
    if (current.detail !== open) return;
    setError("Members", null);
    open.membersNext = page.next ?? null;
    open.memberCount = Number(page.count ?? 0);
    ui.memberCount.textContent = NUMBER.format(open.memberCount);
    const frag = document.createDocumentFragment();
    for (const m of page.members ?? []) frag.append(memberRow(m));
    if (reset) keepFocus(ui.members, "data-id", () => ui.members.replaceChildren(frag));
    else ui.members.append(frag);
    if (open.memberCount === 0) ui.members.append(h("li", "hint", "Nobody is in this room."));
    ui.membersMore.hidden = open.membersNext === null;
  } catch (err) {
    failed("Members", err);
  }
}

/** The first page of members again, after a control, if `open` is still the open room. */
export function reloadMembers(/** @type {Detail} */ open) {
  if (current.detail === open) void loadMembers(true, open.controller.signal);
}

/** One member with a Disconnect button. @param {Member} m */
function memberRow(m) {
  const li = h("li");
  li.dataset.id = m.id;
  const who = h("div", "who");
  who.append(h("span", "name", m.name), h("span", "hint", `${m.id} · ${m.mode}`));
  const kick = h("button", "danger small", "Disconnect…");
  kick.type = "button";
  kick.setAttribute("aria-label", `Disconnect ${m.name} (${m.id})`);
  kick.addEventListener("click", () => void disconnectMember(m));
  li.append(who, kick);
  return li;
}

/** Disconnect one member after confirmation. @param {Member} m */
async function disconnectMember(m) {
  const open = current.detail;
  if (!open) return;
  const answer = await confirmAction({
    title: `Disconnect ${m.name}?`,
    text: `${m.name} (${m.id}, ${m.mode}) is disconnected from ${open.room} with close code ` +
      "4003. Every connection with this id in the room is closed; clients may reconnect.",
    ok: "Disconnect",
    reason: true,
  });
  if (!answer || current.detail !== open) return;
  await control(
    "/api/admin/disconnect",
    { room: open.room, id: m.id, ...(answer.reason ? { reason: answer.reason } : {}) },
    `Disconnected ${m.name} (${m.id})`,
  );
  reloadMembers(open);
}
