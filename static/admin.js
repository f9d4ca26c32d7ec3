// @ts-check
/// <reference lib="dom" />
/**
 * chorus admin page (`/admin`, docs/admin.md): an operator's live view of one chorus server or
 * cluster, a client of the HTTP API (docs/api.md) only. It asks for the API key once, keeps it
 * in `sessionStorage` and sends it as a bearer token with every call; any 401 ends the session
 * and shows the sign-in form again.
 *
 * This entry module wires the page's parts, ES modules under `admin/` (served beside it, so
 * their relative imports resolve under any base path):
 * - `login.js`: signing in and out; `api.js`: the calls and the stats stream reader;
 *   `status.js`: the status line and the error banner.
 * - Overview (`overview.js`, `charts.js`): `GET /api/admin/stream` (server-sent events read
 *   with `fetch`, since EventSource cannot send a header) gives cumulative counters once a
 *   second; successive events are diffed into rates and drawn as hand-made SVG lines over the
 *   last 15 minutes.
 * - Rooms (`rooms.js`): `GET /api/admin/rooms` every few seconds; messages per second is the
 *   change of each room's offset between two polls. The table shows at most 100 rows at a time
 *   ("Show more" adds more), and reuses each row's elements from poll to poll.
 * - Room detail (`room.js`, `members.js`, `stream.js`, `controls.js`; `detail.js` says which
 *   room is open): members (paged), the room's kept history and its live stream
 *   (`GET /api/rooms/history?after=` polled), and the controls, each behind a confirmation.
 * - `dom.js` and `format.js`: the page's elements and how numbers and times are written.
 *
 * All text from the server is rendered with `textContent`. For tests and curious operators the
 * page sets `performance` marks: `chorus:signin` when a key is submitted and
 * `chorus:rooms-rendered` after the rooms table is first built.
 */
import { onDialogSubmit } from "./admin/controls.js";
import { current } from "./admin/detail.js";
import { ui } from "./admin/dom.js";
import { onLoginSubmit, showLogin, signIn, signOut, storedKey } from "./admin/login.js";
import { loadMembers } from "./admin/members.js";
import { renderOverview } from "./admin/overview.js";
import { closeTheRoom, onPostSubmit, route } from "./admin/room.js";
import { onFilterInput, onSortClick, showMoreRooms } from "./admin/rooms.js";
import { onUnauthorized } from "./admin/status.js";
import { loadOlder } from "./admin/stream.js";

function start() {
  onUnauthorized(signOut);
  ui.loginForm.addEventListener("submit", onLoginSubmit);
  ui.logout.addEventListener("click", () => signOut("Signed out."));
  ui.roomsTable.tHead.addEventListener("click", onSortClick);
  ui.filter.addEventListener("input", onFilterInput);
  ui.roomsMore.addEventListener("click", showMoreRooms);
  ui.split.addEventListener("change", renderOverview);
  ui.membersMore.addEventListener("click", () => {
    if (current.detail) void loadMembers(false, current.detail.controller.signal);
  });
  ui.membersRefresh.addEventListener("click", () => {
    if (current.detail) void loadMembers(true, current.detail.controller.signal);
  });
  ui.older.addEventListener("click", () => void loadOlder());
  ui.postForm.addEventListener("submit", (/** @type {SubmitEvent} */ e) => void onPostSubmit(e));
  ui.closeRoom.addEventListener("click", () => void closeTheRoom());
  ui.dialog.addEventListener("submit", onDialogSubmit);
  addEventListener("hashchange", route);
  const key = storedKey();
  if (key) void signIn(key);
  else showLogin("");
}

start();
