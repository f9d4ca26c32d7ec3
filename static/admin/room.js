// @ts-check
/// <reference lib="dom" />
/**
 * A room's detail (`#room=/path`): opening and closing it after the URL's hash, and its
 * room-wide controls (post a system message, close the room), each behind a confirmation. Its
 * parts are the members (members.js) and the message stream (stream.js).
 * @module
 */
import { apiJson, messageOf, q, session, Unauthorized } from "./api.js";
import { confirmAction, control, showResult, summary } from "./controls.js";
import { current } from "./detail.js";
import { ui } from "./dom.js";
import { loadMembers, reloadMembers } from "./members.js";
import { scheduleRooms, updateRoomFacts } from "./rooms.js";
import { failed, setError } from "./status.js";
import { followStream } from "./stream.js";

/** Open or close the room view after the URL's hash (`#room=/lobby`). */
export function route() {
  if (!session.controller) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  if (room) openRoom(room);
  else closeRoom();
}

/** Show `room`'s detail and start its polls. @param {string} room */
function openRoom(room) {
  if (current.detail?.room === room) return;
  closeRoom();
  const session_ = session.controller;
  if (!session_) return;
  const controller = new AbortController();
  current.detail = {
    room,
    controller,
    epoch: null,
    after: 0,
    before: null,
    membersNext: null,
    memberCount: -1,
  };
  ui.roomsView.hidden = true;
  ui.roomView.hidden = false;
  ui.roomHeading.textContent = room;
  ui.actionResult.hidden = true;
  ui.members.replaceChildren();
  ui.messages.replaceChildren();
  ui.membersMore.hidden = true;
  ui.older.hidden = true;
  ui.postText.value = "";
  updateRoomFacts();
  document.title = `${room} · chorus admin`;
  ui.roomHeading.tabIndex = -1;
  ui.roomHeading.focus();
  const signal = AbortSignal.any([session_.signal, controller.signal]);
  void loadMembers(true, signal);
  void followStream(signal);
}

/** Leave the room view (its polls stop) and show the table again. */
export function closeRoom() {
  if (!current.detail) return;
  current.detail.controller.abort();
  current.detail = null;
  ui.roomView.hidden = true;
  ui.roomsView.hidden = false;
  document.title = "chorus admin";
  setError("Members", null);
  setError("Messages", null);
  scheduleRooms();
}

/** Close the open room after confirmation. */
export async function closeTheRoom() {
  const open = current.detail;
  if (!open) return;
  const answer = await confirmAction({
    title: `Close ${open.room}?`,
    text: `Every member of ${open.room} is disconnected with close code 4004.`,
    ok: "Close room",
    reason: true,
  });
  if (!answer || current.detail !== open) return;
  await control(
    "/api/admin/close-room",
    { room: open.room, ...(answer.reason ? { reason: answer.reason } : {}) },
    `Closed ${open.room}`,
  );
  reloadMembers(open);
}

/** Post the typed system message after confirmation. @param {SubmitEvent} e */
export async function onPostSubmit(e) {
  e.preventDefault();
  const open = current.detail;
  const text = ui.postText.value;
  if (!open || text.trim() === "") return;
  const answer = await confirmAction({
    title: `Post to ${open.room}?`,
    text: `As "system", to every member, kept in the room's history: ${text}`,
    ok: "Post",
    reason: false,
  });
  if (!answer || current.detail !== open) return;
  try {
    const result = await apiJson(`/api/admin/publish?room=${q(open.room)}&name=system`, {
      method: "POST",
      headers: { "content-type": "text/plain; charset=utf-8" },
      body: text,
    });
    ui.postText.value = "";
    showResult(`Posted to ${open.room}${summary(result)}`, true);
  } catch (err) {
    if (err instanceof Unauthorized) return failed("Post", err);
    showResult(`Failed: ${messageOf(err)}`, false);
  }
}
