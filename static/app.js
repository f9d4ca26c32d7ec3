/**
 * chorus chat page: speaks the `chorus.v1` WebSocket subprotocol with the room named by this
 * page's URL path. All text is rendered with `textContent`; nothing is exposed globally except
 * `document.body.dataset.memberId`, set after every welcome for tests.
 *
 * Events only change `state`; the DOM is updated at most once per animation frame (see
 * {@link render}), so a busy room costs one layout per frame, not one per message, and a hidden
 * tab does no DOM work at all. A room over the server's presence limit (a `welcome` with
 * `partial`, or a `presence` event) shows its member count instead of the list.
 */

const SUBPROTOCOL = "chorus.v1";
const NAME_KEY = "chorus.name";
/** sessionStorage key of this tab's member ids, so a reload still knows its own messages. */
const OWN_IDS_KEY = "chorus.ownIds";
const MAX_OWN_IDS = 100;
const MAX_NAME_LENGTH = 32;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const LATER_MIN_MS = 5_000;
/** Messages and notices kept in the log; older ones are removed as new ones arrive. */
const MAX_LOG_ENTRIES = 2000;
/**
 * Message ids remembered to skip a message shown before (a reconnect's welcome replays up to
 * the server's `--history`, at most 10,000); older ids are forgotten so memory stays bounded.
 */
const MAX_SEEN_IDS = 10_000;
const STICKY_PX = 40;
/** Close codes after which the page stays disconnected (plus 4000–4099). */
const STOP_CODES = new Set([1000, 1002, 1003, 1007, 1009, 1010]);
/** Close codes after which the page reconnects, but not before {@link LATER_MIN_MS}. */
const LATER_CODES = new Set([1001, 1008, 1013]);
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
  /** @type {WebSocket | null} */ ws: null,
  /** @type {string | null} */ myId: null,
  /** @type {string | null} */ myName: null,
  /** @type {Set<string>} every id this tab has had, so old own messages stay marked */
  myIds: new Set(storedOwnIds()),
  /** @type {Map<string, string>} member id -> name; empty in a large room */ members: new Map(),
  /** Members of the room on every instance, this page and raw clients included. */
  count: 0,
  /** Whether the room is over the presence limit: a count, no list, no join/leave. */
  large: false,
  /** @type {Set<string>} ids of the last {@link MAX_SEEN_IDS} messages rendered */
  rendered: new Set(),
  /** @type {string | null} */ lastId: null,
  /** @type {string | null} the room's stream epoch, from the welcome */ epoch: null,
  /** @type {number | null} the offset of the last message shown, to resume after it */
  offset: null,
  attempt: 0,
  welcomed: false,
  everWelcomed: false,
  sentSince: false,
  retryAt: 0,
  retryTimer: 0,
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

/**
 * Build the socket URL: this page's path plus name, where to resume (the last offset shown, or
 * the last message id from a server without offsets) and a passed-through token.
 */
function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = [];
  const name = storedName();
  if (name) params.push(`name=${encodeURIComponent(name)}`);
  if (state.epoch !== null && state.offset !== null) {
    params.push(`offset=${state.offset}`, `epoch=${encodeURIComponent(state.epoch)}`);
  } else if (state.lastId !== null) params.push(`since=${encodeURIComponent(state.lastId)}`);
  const token = new URLSearchParams(location.search).get("token");
  if (token !== null) params.push(`token=${encodeURIComponent(token)}`);
  const query = params.length ? `?${params.join("&")}` : "";
  return `${scheme}//${location.host}${location.pathname}${query}`;
}

/** Update the connection indicator, the Reconnect button and the send button. */
function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
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

/** Render one chat message unless its id was rendered before. */
function renderMessage(msg) {
  const id = String(msg.id);
  if (state.rendered.has(id)) return;
  state.rendered.add(id);
  if (state.rendered.size >= 2 * MAX_SEEN_IDS) {
    state.rendered = new Set([...state.rendered].slice(-MAX_SEEN_IDS));
  }
  state.lastId = id;
  if (typeof msg.offset === "number") state.offset = Math.max(state.offset ?? 0, msg.offset);
  const own = state.myIds.has(msg.from?.id);
  const el = h("div", own ? "message own" : "message");
  el.dataset.id = id;
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
 * Redraw the member count and list: yourself first, then everyone else by name. A large room
 * shows its count in words instead of a list.
 */
function renderMembers() {
  state.membersChanged = false;
  ui.memberCount.textContent = COUNT_FORMAT.format(state.count);
  ui.memberTotal.textContent = membersText(state.count);
  ui.crowd.hidden = !state.large;
  ui.members.hidden = state.large;
  if (state.large) return ui.members.replaceChildren();
  const entries = [...state.members].sort(([a, an], [b, bn]) =>
    Number(b === state.myId) - Number(a === state.myId) || an.localeCompare(bn)
  );
  ui.members.replaceChildren(...entries.map(([id, name]) => {
    const li = h("li", id === state.myId ? "own" : "", name);
    li.dataset.id = id;
    return li;
  }));
}

/** Mark the member count or list as changed; it is redrawn on the next frame. */
function membersChanged() {
  state.membersChanged = true;
  scheduleRender();
}

/**
 * Take a room's whole member list (a small room's `welcome`, or `members` when a large room
 * shrank back to the limit), or only its count when `partial`: then the list is dropped, not
 * shown as a stale sample.
 */
function setMembers(count, members, partial) {
  state.large = partial;
  state.members = partial ? new Map() : new Map(members.map((m) => [m.id, m.name]));
  state.count = Number.isFinite(count) ? count : state.members.size;
  membersChanged();
}

/** A large room's new member count (also the sign that a small room became large). */
function onPresence(ev) {
  state.large = true;
  state.members.clear();
  if (Number.isFinite(ev.count)) state.count = ev.count;
  membersChanged();
}

/** Someone joined a small room: list them and say so (not for yourself in another tab). */
function onJoin(ev) {
  if (state.large) return;
  state.members.set(ev.id, ev.name);
  state.count += 1;
  membersChanged();
  if (ev.id !== state.myId) addNotice(`${ev.name} joined.`, "join");
}

/** Someone left a small room. */
function onLeave(ev) {
  if (state.large) return;
  state.members.delete(ev.id);
  state.count = Math.max(0, state.count - 1);
  membersChanged();
  addNotice(`${ev.name} left.`, "leave");
}

/** Handle the first event of a connection: identity, members and (missed) history. */
function onWelcome(ev) {
  state.myId = ev.id;
  state.myName = ev.name;
  state.myIds.add(ev.id);
  storeOwnIds();
  state.attempt = 0;
  state.welcomed = true;
  document.body.dataset.memberId = ev.id;
  setRoom(ev.room);
  setMembers(ev.count, ev.members, ev.partial === true);
  if (document.activeElement !== ui.name) ui.name.value = ev.name;
  if (state.everWelcomed) addNotice("Reconnected.");
  if (state.sentSince && !ev.recovered) addNotice("Some messages may be missing.", "warning");
  if (typeof ev.epoch === "string") {
    // A new stream (or a resume from elsewhere): count from where this welcome starts.
    if (ev.epoch !== state.epoch) state.offset = null;
    state.epoch = ev.epoch;
    state.offset = Math.max(state.offset ?? 0, ev.after ?? 0);
  }
  for (const msg of ev.history) renderMessage(msg);
  state.everWelcomed = true;
  setStatus("open", "connected");
}

/** Apply a rename, which may be your own (then it is remembered). */
function onRename(ev) {
  if (!state.large) {
    state.members.set(ev.id, ev.name);
    membersChanged();
  }
  if (ev.id !== state.myId) return addNotice(`${ev.oldName} is now known as ${ev.name}.`, "rename");
  state.myName = ev.name;
  storeName(ev.name);
  if (document.activeElement !== ui.name) ui.name.value = ev.name;
  addNotice(`You are now known as ${ev.name}.`, "rename");
}

/** Dispatch one server event. */
function handleEvent(ev) {
  switch (ev?.type) {
    case "welcome":
      return onWelcome(ev);
    case "message":
      return renderMessage(ev);
    case "join":
      return onJoin(ev);
    case "leave":
      return onLeave(ev);
    case "presence":
      return onPresence(ev);
    case "members":
      return setMembers(ev.count, ev.members, false);
    case "rename":
      return onRename(ev);
    case "error":
      if (ev.code === "invalid_name" || ev.code === "name_locked") {
        ui.name.value = state.myName ?? "";
      }
      return addNotice(String(ev.message ?? ev.code), "error", String(ev.code ?? ""));
  }
}

/** Split a frame into its "\n"-separated JSON events and handle each. */
function onFrame(data) {
  if (typeof data !== "string") return;
  for (const line of data.split("\n")) {
    if (line.trim() === "") continue;
    try {
      handleEvent(JSON.parse(line));
    } catch (err) {
      console.warn("chorus: ignoring bad event", line, err);
    }
  }
}

/** Classify a close code: "stop" (stay closed), "later" (≥ 5 s) or "retry" (backoff). */
function closePolicy(code) {
  if (STOP_CODES.has(code) || (code >= 4000 && code <= 4099)) return "stop";
  return LATER_CODES.has(code) ? "later" : "retry";
}

/** Next backoff delay: 500 ms doubling to 30 s, with jitter between 50% and 100%. */
function backoffDelay() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  state.attempt += 1;
  return base * (0.5 + Math.random() * 0.5);
}

/** React to the socket closing: report it, then stay closed or schedule a reconnect. */
function onClose(ev) {
  const wasOpen = state.welcomed;
  state.ws = null;
  state.welcomed = false;
  const policy = closePolicy(ev.code);
  const reason = ev.reason || (ev.code === 1006 ? "connection lost" : "connection closed");
  if (wasOpen || policy === "stop") {
    addNotice(`Disconnected: ${reason} (${ev.code}).`, policy === "stop" ? "error" : "close");
  }
  if (policy === "stop") return setStatus("closed", "disconnected");
  const delay = backoffDelay();
  scheduleReconnect(policy === "later" ? Math.max(LATER_MIN_MS, delay) : delay);
}

/** Show the countdown of a pending reconnect. */
function showCountdown() {
  const seconds = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
  setStatus("reconnecting", `reconnecting in ${seconds}s`);
}

/** Reconnect after `delay` ms, counting down in the status meanwhile. */
function scheduleReconnect(delay) {
  cancelReconnect();
  state.retryAt = Date.now() + delay;
  state.retryTimer = setTimeout(connect, delay);
  state.countdownTimer = setInterval(showCountdown, 1000);
  showCountdown();
}

/** Cancel a pending reconnect, if any. */
function cancelReconnect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
}

/** Open a connection to this page's room, unless one is already open or opening. */
function connect() {
  cancelReconnect();
  if (state.ws) return;
  state.sentSince = state.lastId !== null || state.offset !== null;
  setStatus("connecting", "connecting…");
  let ws;
  try {
    ws = new WebSocket(socketUrl(), SUBPROTOCOL);
  } catch (err) {
    addNotice(`Cannot connect: ${err instanceof Error ? err.message : err}`, "error");
    return setStatus("closed", "disconnected");
  }
  state.ws = ws;
  ws.onmessage = (ev) => ws === state.ws && onFrame(ev.data);
  ws.onclose = (ev) => ws === state.ws && onClose(ev);
}

/** Close the connection on purpose (code 1000); its close event is then ignored. */
function disconnect() {
  cancelReconnect();
  const ws = state.ws;
  state.ws = null;
  state.welcomed = false;
  ws?.close(1000, "page closed");
}

/** Send one event if connected; report and return false otherwise. */
function send(event) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.welcomed) {
    addNotice("Not connected.", "error");
    return false;
  }
  state.ws.send(JSON.stringify(event));
  return true;
}

/** Send the typed message and clear the input. */
function onSendSubmit(e) {
  e.preventDefault();
  const text = ui.input.value;
  if (text.trim() === "") return;
  if (send({ type: "message", text })) ui.input.value = "";
}

/** Apply the name field: rename when connected, otherwise remember it for the next connect. */
function onNameSubmit(e) {
  e.preventDefault();
  const check = checkName(ui.name.value);
  if (!check.ok) return addNotice(check.message, "error", "invalid_name");
  ui.name.value = check.name;
  if (state.welcomed) {
    if (check.name !== state.myName) send({ type: "rename", name: check.name });
    return;
  }
  storeName(check.name);
  addNotice(`Name saved as ${check.name}; it is used when you connect.`);
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
  ui.reconnect.addEventListener("click", () => {
    state.attempt = 0;
    connect();
  });
  addEventListener("online", () => ui.status.dataset.state === "reconnecting" && connect());
  addEventListener("pagehide", disconnect);
  addEventListener("pageshow", (e) => e.persisted && connect());
  connect();
}

start();
