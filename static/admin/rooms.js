// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The rooms table: `GET /api/admin/rooms` every few seconds; messages per second is the change
 * of each room's offset between two polls. The table shows at most {@link ROWS_STEP} rows at a
 * time ("Show more" adds more), and reuses each row's elements from poll to poll. The open
 * room's line of facts is drawn from the same numbers ({@link updateRoomFacts}).
 * @module
 */
import { apiJson, delay, q } from "./api.js";
import { current } from "./detail.js";
import { h, keepFocus, setText, ui } from "./dom.js";
import { ago, formatRate, NUMBER, toDate } from "./format.js";
import { loadMembers } from "./members.js";
import { failed, setError } from "./status.js";

const ROOMS_POLL_MS = 3000;
/** Rows the rooms table shows at first and adds per "Show more". */
const ROWS_STEP = 100;

/**
 * @typedef {{ room: string, members: number, offset: number | null,
 *   lastActivity: number | string | null, rate: number | null, polledAt: number }} RoomRow
 */

const rooms = {
  /** @type {Map<string, RoomRow>} */
  byName: new Map(),
  sort: { key: /** @type {keyof RoomRow} */ ("members"), descending: true },
  shown: ROWS_STEP,
  /**
   * Rendered rows and their cells, reused between polls.
   * @type {Map<string, { tr: HTMLTableRowElement, members: HTMLElement, rate: HTMLElement,
   *   offset: HTMLElement, last: HTMLElement }>}
   */
  rowElements: new Map(),
  rendered: false,
  frame: 0,
};

/** Forget the rooms and empty the table (the session ended). */
export function resetRooms() {
  rooms.byName.clear();
  rooms.rowElements.clear();
  rooms.rendered = false;
  ui.roomsBody.replaceChildren();
}

/** Poll `GET /api/admin/rooms` until the session ends. @param {AbortSignal} signal */
export async function pollRooms(signal) {
  while (!signal.aborted) {
    await delay(ROOMS_POLL_MS, signal);
    if (signal.aborted) return;
    try {
      applyRooms(await apiJson("/api/admin/rooms"));
      setError("Rooms", null);
    } catch (err) {
      failed("Rooms", err);
    }
  }
}

/**
 * One answer of the rooms endpoint: new rates from the change of each offset, then a redraw.
 * @param {any} body
 */
export function applyRooms(body) {
  const now = performance.now();
  /** @type {Map<string, RoomRow>} */
  const next = new Map();
  for (const r of Array.isArray(body?.rooms) ? body.rooms : []) {
    const before = rooms.byName.get(r.room);
    const offset = typeof r.offset === "number" ? r.offset : null; // null: the store is down
    const seconds = before ? (now - before.polledAt) / 1000 : 0;
    const grew = before?.offset != null && offset !== null && offset >= before.offset;
    const rate = grew && seconds > 0
      ? (offset - /** @type {number} */ (before.offset)) / seconds
      : null;
    next.set(r.room, {
      room: String(r.room),
      members: Number(r.members ?? 0),
      offset,
      lastActivity: r.lastActivity ?? null,
      rate,
      polledAt: now,
    });
  }
  rooms.byName = next;
  for (const name of rooms.rowElements.keys()) {
    if (!next.has(name)) rooms.rowElements.delete(name);
  }
  scheduleRooms();
  if (current.detail) updateRoomFacts();
}

/** Redraw the table on the next frame. */
export function scheduleRooms() {
  if (rooms.frame === 0) rooms.frame = requestAnimationFrame(renderRooms);
}

/** The filter changed: the first rows of the new match, on the next frame. */
export function onFilterInput() {
  rooms.shown = ROWS_STEP;
  scheduleRooms();
}

/** "Show more": {@link ROWS_STEP} more rows, now. */
export function showMoreRooms() {
  rooms.shown += ROWS_STEP;
  renderRooms();
}

/** @param {RoomRow} a @param {RoomRow} b @returns {number} */
function compareRooms(a, b) {
  const { key, descending } = rooms.sort;
  let order;
  if (key === "room") order = a.room.localeCompare(b.room);
  else if (key === "lastActivity") {
    order = (toDate(a.lastActivity)?.getTime() ?? 0) - (toDate(b.lastActivity)?.getTime() ?? 0);
  } else order = Number(a[key] ?? -1) - Number(b[key] ?? -1);
  if (order === 0 && key !== "room") return a.room.localeCompare(b.room);
  return descending ? -order : order;
}

/**
 * Draw the table: filter, sort, then at most `rooms.shown` rows, built (or updated in place)
 * into one fragment and swapped in at once.
 */
function renderRooms() {
  rooms.frame = 0;
  const filter = ui.filter.value.trim().toLowerCase();
  const all = [...rooms.byName.values()];
  const matching = filter ? all.filter((r) => r.room.toLowerCase().includes(filter)) : all;
  matching.sort(compareRooms);
  const visible = matching.slice(0, rooms.shown);
  keepFocus(ui.roomsBody, "data-room", () => {
    const frag = document.createDocumentFragment();
    for (const row of visible) frag.append(roomRow(row));
    ui.roomsBody.replaceChildren(frag);
  });
  ui.roomCount.textContent = NUMBER.format(all.length);
  const of = filter ? `${NUMBER.format(matching.length)} matching` : NUMBER.format(all.length);
  ui.roomsShown.textContent = matching.length === 0
    ? (filter ? "No room matches the filter." : "No rooms.")
    : `Showing ${NUMBER.format(visible.length)} of ${of}.`;
  ui.roomsMore.hidden = visible.length >= matching.length;
  for (const th of ui.roomsTable.tHead.rows[0].cells) {
    const sorted = th.dataset.key === rooms.sort.key;
    if (sorted) th.setAttribute("aria-sort", rooms.sort.descending ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
  if (!rooms.rendered) {
    rooms.rendered = true;
    performance.mark("chorus:rooms-rendered");
  }
}

/**
 * The table row of `r`, made once per room and updated in place.
 * @param {RoomRow} r @returns {HTMLTableRowElement}
 */
function roomRow(r) {
  let row = rooms.rowElements.get(r.room);
  if (!row) {
    const tr = h("tr");
    const th = h("th");
    th.scope = "row";
    const link = h("a", "", r.room);
    link.href = `#room=${q(r.room)}`;
    th.append(link);
    row = {
      tr,
      members: h("td", "num"),
      rate: h("td", "num"),
      offset: h("td", "num"),
      last: h("td", "num"),
    };
    tr.append(th, row.members, row.rate, row.offset, row.last);
    tr.dataset.room = r.room;
    rooms.rowElements.set(r.room, row);
  }
  const date = toDate(r.lastActivity);
  setText(row.members, NUMBER.format(r.members));
  setText(row.rate, formatRate(r.rate));
  setText(row.offset, r.offset === null ? "–" : NUMBER.format(r.offset));
  setText(row.last, ago(date));
  const title = date ? date.toLocaleString() : "";
  if (row.last.title !== title) row.last.title = title;
  return row.tr;
}

/** Sort by the header's column; the same column again reverses the order. @param {Event} e */
export function onSortClick(e) {
  const th = /** @type {HTMLElement | null} */ (/** @type {Element} */ (e.target).closest("th"));
  const key = /** @type {keyof RoomRow | undefined} */ (th?.dataset.key);
  if (!key) return;
  rooms.sort = rooms.sort.key === key
    ? { key, descending: !rooms.sort.descending }
    : { key, descending: key !== "room" };
  renderRooms();
}

/** The line under the room's heading: members, msg/s, offset, last activity (from the table). */
export function updateRoomFacts() {
  const detail = current.detail;
  if (!detail) return;
  const r = rooms.byName.get(detail.room);
  ui.roomFacts.textContent = r
    ? [
      `${NUMBER.format(r.members)} ${r.members === 1 ? "member" : "members"}`,
      `${formatRate(r.rate)} msg/s`,
      `offset ${r.offset === null ? "–" : NUMBER.format(r.offset)}`,
      `last activity ${ago(toDate(r.lastActivity))}`,
    ].join(" · ")
    : "No members now.";
  // A small room's list is reloaded when its count changes; a paged one only on request.
  if (
    r && detail.memberCount >= 0 && detail.membersNext === null && r.members !== detail.memberCount
  ) {
    void loadMembers(true, detail.controller.signal);
  }
}
