/**
 * chorus chat page, built on the client library `chorus.js` (served at `BASE/chorus.js`; see
 * docs/client.md), which connects to the room named by this page's URL path, reconnects with
 * backoff, resumes without showing a message twice, and falls back to SSE + POST where a
 * WebSocket cannot get through. The status line says which transport is in use. All text is
 * rendered with `textContent`; nothing is exposed globally except `document.body.dataset.memberId`,
 * set after every welcome for tests.
 *
 * Events only change state; the DOM is updated at most once per animation frame (see
 * {@link render}), so a busy room costs one layout per frame, not one per message, and a hidden
 * tab does no DOM work at all. A room over the server's presence limit (`room.large`) shows its
 * member count instead of the list.
 */
// app.js is served at BASE/_static/app.js, so this is BASE/chorus.js under any base path.
import { connect } from "../chorus.js";

const NAME_KEY = "chorus.name";
/** sessionStorage key of this tab's member ids, so a reload still knows its own messages. */
const OWN_IDS_KEY = "chorus.ownIds";
const MAX_OWN_IDS = 100;
const MAX_NAME_LENGTH = 32;
/** Messages and notices kept in the log; older ones are removed as new ones arrive. */
const MAX_LOG_ENTRIES = 2000;
const STICKY_PX = 40;
/** How the status line names each transport. */
const TRANSPORT_NAMES = { websocket: "WebSocket", sse: "SSE" };
/**
 * Path prefix the server is mounted under (`/ws` when an app embeds chorus there), from the
 * page's `chorus-base` meta tag; "" when chorus owns the whole origin. The room is the rest.
 */
const BASE = document.querySelector('meta[name="chorus-base"]')?.getAttribute("content") ?? "";
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
/** Member counts with the page language's thousands separators: "1,234". */
const COUNT_FORMAT = new Intl.NumberFormat(document.documentElement.lang || undefined);

/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  reconnect: $("reconnect"),
  roomName: $("room-name"),
  nameForm: $("name-form"),
  name: $("name"),
  roomForm: $("room-form"),
  room: $("room"),
  members: $("members"),
  memberCount: $("member-count"),
  crowd: $("crowd"),
  memberTotal: $("member-total"),
  log: $("messages"),
  sendForm: $("send-form"),
  input: $("input"),
  send: $("send"),
};

const state = {
  /** @type {import("../chorus.js").Room | null} the room of this page while it is shown */
  room: null,
  /** @type {Set<string>} every id this tab has had, so old own messages stay marked */
  myIds: new Set(storedOwnIds()),
  /** Whether a welcome came before, so the next one says "Reconnected." */
  everWelcomed: false,
  /** Whether the room is open, so its end is worth a notice. */
  open: false,
  retryAt: 0,
  countdownTimer: 0,
  /** @type {Element[]} log entries not yet in the DOM, oldest first */ pending: [],
  /** Whether the next render scrolls the log to its end whatever its position. */
  forceScroll: false,
  /** Whether the member list or count changed since the last render. */
  membersChanged: false,
  /** The requested animation frame of the next render; 0 when none is requested. */
  frame: 0,
};

/** Create an element with an optional class name and text content. */
function h(tag, className = "", text = "") {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text) el.textContent = text;
  return el;
}

/** Read the remembered display name, tolerating disabled storage. */
function storedName() {
  try {
    return localStorage.getItem(NAME_KEY) ?? "";
  } catch {
    return "";
  }
}

/** Remember a display name chosen by the user (never a server-assigned guest name). */
function storeName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch { /* storage unavailable: the name lasts for this page only */ }
}

/** This tab's member ids from before a reload, tolerating disabled storage or junk. */
function storedOwnIds() {
  try {
    const ids = JSON.parse(sessionStorage.getItem(OWN_IDS_KEY) ?? "[]");
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
  } catch {
    return [];
  }
}

/** Remember this tab's most recent member ids for the next load of the page. */
function storeOwnIds() {
  try {
    sessionStorage.setItem(OWN_IDS_KEY, JSON.stringify([...state.myIds].slice(-MAX_OWN_IDS)));
  } catch { /* storage unavailable: after a reload, earlier messages are not marked own */ }
}

/** Trim a name and apply the server's rules: 1–32 characters, no control characters. */
function checkName(raw) {
  const name = raw.trim();
  if (name.length === 0) return { ok: false, message: "Name must not be empty." };
  if (name.length > MAX_NAME_LENGTH) {
    return { ok: false, message: `Name must be at most ${MAX_NAME_LENGTH} characters.` };
  }
  if (CONTROL.test(name)) {
    return { ok: false, message: "Name must not contain control characters." };
  }
  return { ok: true, name };
}

/** Show the room (decoded if possible) in the header, the tab title and the room switcher. */
function setRoom(path) {
  let room = path;
  try {
    room = decodeURIComponent(path);
  } catch { /* malformed escape: show the path as is */ }
  ui.roomName.textContent = room;
  document.title = `${room} · chorus`;
  if (document.activeElement !== ui.room) ui.room.value = room;
}

/** Update the connection indicator, the Reconnect button and the send button. */
function setStatus(kind, text, transport = null, title = "") {
  ui.status.dataset.state = kind;
  ui.status.dataset.transport = transport ?? "";
  ui.status.textContent = text;
  ui.status.title = title;
  ui.reconnect.hidden = kind !== "closed" && kind !== "reconnecting";
  ui.send.disabled = kind !== "open";
}

/** Update the DOM on the next animation frame (once, however many events come before it). */
function scheduleRender() {
  if (state.frame === 0) state.frame = requestAnimationFrame(render);
}

/** Apply what changed since the last frame: the member list, then the new log entries. */
function render() {
  state.frame = 0;
  if (state.membersChanged) renderMembers();
  if (state.pending.length > 0) flushLog();
}

/**
 * Queue an entry for the log; it is added on the next frame. Only the last
 * {@link MAX_LOG_ENTRIES} queued entries are kept, so a hidden tab (no frames) stays bounded.
 */
function appendEntry(el, forceScroll = false) {
  state.pending.push(el);
  if (state.pending.length >= 2 * MAX_LOG_ENTRIES) state.pending.splice(0, MAX_LOG_ENTRIES);
  state.forceScroll ||= forceScroll;
  scheduleRender();
}

/**
 * Add the queued entries to the log at once, drop the oldest past the cap, and stay pinned to
 * the end if the log was there (or an own message was sent): one layout read per frame.
 */
function flushLog() {
  const entries = state.pending.slice(-MAX_LOG_ENTRIES);
  state.pending = [];
  const { scrollHeight, scrollTop, clientHeight } = ui.log;
  const stick = state.forceScroll || scrollHeight - scrollTop - clientHeight < STICKY_PX;
  state.forceScroll = false;
  ui.log.append(...entries);
  for (let n = ui.log.childElementCount - MAX_LOG_ENTRIES; n > 0; n--) {
    ui.log.firstElementChild.remove();
  }
  if (stick) ui.log.scrollTop = ui.log.scrollHeight;
}

/** Show a notice line; kind "error" also gets the class "error". */
function addNotice(text, kind = "info", code = "") {
  const el = h("div", kind === "error" ? "notice error" : "notice", text);
  el.dataset.kind = kind;
  if (code) el.dataset.code = code;
  appendEntry(el);
}

/** A <time> element showing HH:MM (local) for a ms-since-epoch timestamp. */
function timeElement(ts) {
  const date = new Date(Number.isFinite(ts) ? ts : Date.now());
  const hhmm = [date.getHours(), date.getMinutes()].map((n) => String(n).padStart(2, "0"));
  const el = h("time", "", hhmm.join(":"));
  el.dateTime = date.toISOString();
  el.title = date.toLocaleString();
  return el;
}

/** Render one chat message (the library delivers each once, in order). */
function renderMessage(msg) {
  const own = state.myIds.has(msg.from?.id);
  const el = h("div", own ? "message own" : "message");
  el.dataset.id = String(msg.id);
  const meta = h("div", "meta");
  meta.append(h("span", "from", String(msg.from?.name ?? "?")), " ", timeElement(msg.ts));
  el.append(meta, h("div", "text", String(msg.text ?? "")));
  appendEntry(el, own);
}

/** "1 member", "1,234 members". */
function membersText(count) {
  return `${COUNT_FORMAT.format(count)} ${count === 1 ? "member" : "members"}`;
}

/**
 * Redraw the member count and list from the room: yourself first, then everyone else by name.
 * A large room shows its count in words instead of a list.
 */
function renderMembers() {
  state.membersChanged = false;
  const room = state.room;
  if (!room) return;
  const me = room.me?.id;
  ui.memberCount.textContent = COUNT_FORMAT.format(room.count);
  ui.memberTotal.textContent = membersText(room.count);
  ui.crowd.hidden = !room.large;
  ui.members.hidden = room.large;
  if (room.large) return ui.members.replaceChildren();
  const members = [...room.members.values()].sort((a, b) =>
    Number(b.id === me) - Number(a.id === me) || a.name.localeCompare(b.name)
  );
  ui.members.replaceChildren(...members.map(({ id, name }) => {
    const li = h("li", id === me ? "own" : "", name);
    li.dataset.id = id;
    return li;
  }));
}

/** Mark the member count or list as changed; it is redrawn on the next frame. */
function membersChanged() {
  state.membersChanged = true;
  scheduleRender();
}

/** Show the countdown of a pending reconnect. */
function showCountdown() {
  const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
  setStatus("reconnecting", `reconnecting in ${seconds}s`);
}

/**
 * The library's `status`: the status line (with the transport), a notice when a connection
 * ends, and a countdown while a reconnect waits.
 */
function onStatus(s) {
  clearInterval(state.countdownTimer);
  const transport = s.transport ? TRANSPORT_NAMES[s.transport] ?? s.transport : "";
  const via = transport ? ` · ${transport}` : "";
  const why = `${s.refusal?.message || s.reason || "connection closed"} (${
    s.refusal?.status ?? s.code
  })`;
  switch (s.state) {
    case "connecting":
      return setStatus("connecting", `connecting…${via}`, s.transport);
    case "open":
      state.open = true;
      return setStatus(
        "open",
        `connected${via}`,
        s.transport,
        s.fallback ? "WebSocket could not connect; using SSE + POST" : "",
      );
    case "reconnecting":
      if (state.open) addNotice(`Disconnected: ${why}.`, "close");
      state.open = false;
      state.retryAt = Date.now() + (s.delay ?? 0);
      state.countdownTimer = setInterval(showCountdown, 1000);
      return showCountdown();
    case "closed":
      state.open = false;
      addNotice(`Disconnected: ${why}.`, "error");
      return setStatus("closed", "disconnected");
  }
}

/** A welcome: who this connection is, and its members (its history follows as messages). */
function onWelcome(w) {
  state.myIds.add(w.id);
  storeOwnIds();
  document.body.dataset.memberId = w.id;
  setRoom(w.room);
  if (document.activeElement !== ui.name) ui.name.value = w.name;
  if (state.everWelcomed) addNotice("Reconnected.");
  state.everWelcomed = true;
  membersChanged();
}

/** Someone joined a small room: say so (not for yourself in another tab). */
function onJoin(ev) {
  if (state.room?.large) return;
  membersChanged();
  if (ev.id !== state.room?.me?.id) addNotice(`${ev.name} joined.`, "join");
}

/** Someone left a small room. */
function onLeave(ev) {
  if (state.room?.large) return;
  membersChanged();
  addNotice(`${ev.name} left.`, "leave");
}

/** Apply a rename, which may be your own (then it is remembered). */
function onRename(ev) {
  membersChanged();
  if (ev.id !== state.room?.me?.id) {
    return addNotice(`${ev.oldName} is now known as ${ev.name}.`, "rename");
  }
  storeName(ev.name);
  if (document.activeElement !== ui.name) ui.name.value = ev.name;
  addNotice(`You are now known as ${ev.name}.`, "rename");
}

/** A server error, or a send that failed (over SSE, the POST's answer). */
function onError(e) {
  if (e.source === "client") return console.warn("chorus:", e.code, e.message);
  if (e.code === "invalid_name" || e.code === "name_locked") {
    ui.name.value = state.room?.me?.name ?? "";
  }
  addNotice(String(e.message || e.code), "error", String(e.code ?? ""));
}

/**
 * Connect to this page's room (from `resume`, a position of an earlier room of this page) and
 * listen to it; events of a room that is no longer the page's are ignored.
 */
function join(resume = null) {
  const name = storedName();
  const token = new URLSearchParams(location.search).get("token");
  const room = connect(`${location.origin}${location.pathname}`, {
    ...(name ? { name } : {}),
    ...(token !== null ? { token } : {}),
    ...(resume ? { resume } : {}),
  });
  const on = (type, fn) => room.on(type, (ev) => room === state.room && fn(ev));
  on("status", onStatus);
  on("welcome", onWelcome);
  on("gap", () => addNotice("Some messages may be missing.", "warning"));
  on("message", renderMessage);
  on("join", onJoin);
  on("leave", onLeave);
  on("rename", onRename);
  on("presence", membersChanged);
  on("members", membersChanged);
  on("error", onError);
  state.room = room;
}

/** Close the room on purpose (the page is hidden); its events are then ignored. */
function leave() {
  const room = state.room;
  state.room = null;
  state.open = false;
  clearInterval(state.countdownTimer);
  room?.close();
  return room;
}

/** Send the typed message and clear the input (put back if the send fails). */
function onSendSubmit(e) {
  e.preventDefault();
  const text = ui.input.value;
  if (text.trim() === "" || !state.room) return;
  ui.input.value = "";
  state.room.send(text).catch(() => {
    if (ui.input.value === "") ui.input.value = text;
  });
}

/** Apply the name field: rename now, or when the room next connects (and remember it). */
function onNameSubmit(e) {
  e.preventDefault();
  const check = checkName(ui.name.value);
  if (!check.ok) return addNotice(check.message, "error", "invalid_name");
  ui.name.value = check.name;
  const room = state.room;
  if (!room) return;
  if (room.state !== "open") {
    storeName(check.name);
    addNotice(`Name saved as ${check.name}; it is used when you connect.`);
  } else if (check.name === room.me?.name) return;
  room.rename(check.name).catch(() => {}); // a failure is an error event: a notice
}

/** Navigate to the typed room, always a same-origin path starting with "/", keeping ?token=. */
function onRoomSubmit(e) {
  e.preventDefault();
  const raw = ui.room.value.trim().replace(/^[/\\]+/, "");
  const path = `${BASE}/${raw.replace(/[?#]/g, (c) => encodeURIComponent(c))}`;
  const url = new URL(path, location.origin);
  const token = new URLSearchParams(location.search).get("token");
  if (token !== null) url.searchParams.set("token", token);
  if (url.origin === location.origin) location.assign(url.pathname + url.search);
}

/** Wire up the UI and connect. */
function start() {
  setRoom(location.pathname.slice(BASE.length) || "/");
  ui.name.value = storedName();
  ui.sendForm.addEventListener("submit", onSendSubmit);
  ui.nameForm.addEventListener("submit", onNameSubmit);
  ui.roomForm.addEventListener("submit", onRoomSubmit);
  ui.reconnect.addEventListener("click", () => state.room?.reconnect());
  addEventListener("online", () => state.room?.state === "reconnecting" && state.room.reconnect());
  let hidden = null;
  addEventListener("pagehide", () => {
    hidden = leave();
  });
  addEventListener("pageshow", (e) => {
    if (e.persisted && !state.room) join(hidden?.position);
  });
  join();
}

start();
