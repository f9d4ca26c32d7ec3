// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * chorus admin page (`/admin`, docs/admin.md): an operator's live view of one chorus server or
 * cluster, a client of the HTTP API (docs/api.md) only. It asks for the API key once, keeps it
 * in `sessionStorage` and sends it as a bearer token with every call; any 401 ends the session
 * and shows the sign-in form again.
 *
 * - Overview: `GET /api/admin/stream` (server-sent events read with `fetch`, since EventSource
 *   cannot send a header) gives cumulative counters once a second; successive events are
 *   diffed into rates and drawn as hand-made SVG lines over the last 15 minutes.
 * - Rooms: `GET /api/admin/rooms` every few seconds; messages per second is the change of each
 *   room's offset between two polls. The table shows at most {@link ROWS_STEP} rows at a time
 *   ("Show more" adds more), and reuses each row's elements from poll to poll.
 * - Room detail (`#room=/path`): members (paged), the room's kept history and its live stream
 *   (`GET /api/rooms/history?after=` polled), and the controls, each behind a confirmation.
 *
 * All text from the server is rendered with `textContent`. For tests and curious operators the
 * page sets `performance` marks: `chorus:signin` when a key is submitted and
 * `chorus:rooms-rendered` after the rooms table is first built.
 */

const KEY_STORAGE = "chorus.admin.key";
/** Path prefix the server is mounted under, from the `chorus-base` meta tag; "" for none. */
const BASE = document.querySelector('meta[name="chorus-base"]')?.getAttribute("content") ?? "";
/** Seconds of history the charts show. */
const WINDOW_S = 15 * 60;
/** The shortest time the charts' x axis spans, in seconds. */
const MIN_SPAN_S = 60;
/** Two samples further apart than this are not joined by a line (the stream was down). */
const GAP_S = 3.5;
const ROOMS_POLL_MS = 3000;
const STREAM_POLL_MS = 1000;
/** Rows the rooms table shows at first and adds per "Show more". */
const ROWS_STEP = 100;
const MEMBERS_PAGE = 100;
const HISTORY_PAGE = 50;
/** Messages kept in a room's stream view; older ones are removed as new ones arrive. */
const MAX_STREAM_ENTRIES = 500;
const RETRY_MAX_MS = 15_000;
/** A stats stream that sends nothing for this long is made again. */
const STALE_MS = 10_000;
const SVG_NS = "http://www.w3.org/2000/svg";
const NUMBER = new Intl.NumberFormat("en");
const RATE = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

/**
 * @typedef {{ raw: number, chat: number, sse: number }} Connections
 * @typedef {{ node: string, label?: string, connections: Connections, received: number,
 *   delivered: number, bytesOut: number, rooms: number }} NodeStats
 * @typedef {{ ts: number, nodes: NodeStats[], total: NodeStats,
 *   refused: Record<string, number>, disconnects: Record<string, number> }} Stats
 * @typedef {{ raw: number, chat: number, sse: number, all: number, received: number | null,
 *   delivered: number | null, bytesOut: number | null }} Point
 * @typedef {{ t: number, points: Map<string, Point>, refused: Record<string, number>,
 *   disconnects: Record<string, number> }} Sample
 * @typedef {{ room: string, members: number, offset: number | null,
 *   lastActivity: number | string | null, rate: number | null, polledAt: number }} RoomRow
 * @typedef {{ id: string, name: string, mode: string }} Member
 * @typedef {{ type: string, id: string, from: { id: string, name: string }, text: string,
 *   ts: number, offset: number }} Message
 * @typedef {{ key: keyof Point, label: string }} Kind
 */

/** @param {string} id @returns {any} */
const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  logout: $("logout"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  key: $("key"),
  loginMessage: $("login-message"),
  loginSubmit: $("login-submit"),
  appView: $("app-view"),
  errors: $("errors"),
  nodesLine: $("nodes-line"),
  splitLabel: $("split-label"),
  split: $("split-nodes"),
  refused: $("refused"),
  disconnects: $("disconnects"),
  roomsView: $("rooms-view"),
  roomCount: $("room-count"),
  filter: $("filter"),
  roomsTable: $("rooms"),
  roomsBody: /** @type {HTMLTableSectionElement} */ ($("rooms").tBodies[0]),
  roomsShown: $("rooms-shown"),
  roomsMore: $("rooms-more"),
  roomView: $("room-view"),
  roomHeading: $("room-heading"),
  roomFacts: $("room-facts"),
  actionResult: $("action-result"),
  members: $("room-members"),
  memberCount: $("room-member-count"),
  membersMore: $("members-more"),
  membersRefresh: $("members-refresh"),
  messages: $("room-messages"),
  older: $("history-older"),
  postForm: $("post-form"),
  postText: $("post-text"),
  closeRoom: $("close-room"),
  dialog: $("confirm"),
  confirmTitle: $("confirm-title"),
  confirmText: $("confirm-text"),
  confirmReasonRow: $("confirm-reason-row"),
  confirmReason: $("confirm-reason"),
  confirmOk: $("confirm-ok"),
};

/** The signed-in session: its key, and an abort signal that ends everything it started. */
const session = {
  key: "",
  /** @type {AbortController | null} */
  controller: null,
};

const stats = {
  /** @type {Sample[]} oldest first, at most {@link WINDOW_S} seconds */
  samples: [],
  /** @type {Stats | null} the previous event, to diff counters into rates */
  previous: null,
  /** @type {NodeStats[]} the nodes of the latest event */
  nodes: [],
  /** @type {number | undefined} the cluster's rooms in the latest event */
  rooms: undefined,
  frame: 0,
};

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

/**
 * The open room: its own abort controller (closing the room view stops its polls), the
 * position of its stream, and the next page of members and of older history.
 * @typedef {{ room: string, controller: AbortController, epoch: string | null, after: number,
 *   before: number | null, membersNext: string | null, memberCount: number }} Detail
 * @type {Detail | null}
 */
let detail = null;

/** Errors shown in the banner, by what failed; a later success of the same thing clears it. */
const errors = new Map();

/** A 401 from the API: the key is wrong or was changed on the server. */
class Unauthorized extends Error {}

/** Any other unsuccessful answer of the API, with its JSON error code when it has one. */
class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(`${message} (${status}${code ? ` ${code}` : ""})`);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/**
 * Create an element with an optional class name and text content.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag @param {string} [className] @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, className = "", text = "") {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text) el.textContent = text;
  return el;
}

/**
 * An SVG element with attributes.
 * @param {string} tag @param {Record<string, string | number>} [attrs] @returns {SVGElement}
 */
function svg(tag, attrs = {}) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/** Wait `ms`, or less if `signal` aborts. @param {number} ms @param {AbortSignal} signal */
function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(undefined);
    }, { once: true });
  });
}

/** @param {unknown} err @returns {boolean} whether `err` is the abort of a signal */
function isAbort(err) {
  return err instanceof DOMException && err.name === "AbortError";
}

/** @param {unknown} err */
function messageOf(err) {
  return err instanceof Error ? err.message : String(err);
}

/** "1.2 KB", "340 B", "5.1 MB". @param {number} n */
function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? Math.round(n) : RATE.format(n)} ${units[i]}`;
}

/** A rate: one decimal below 100, or "–" when it is not known yet. @param {number | null} n */
function formatRate(n) {
  return n === null ? "–" : n >= 100 ? NUMBER.format(Math.round(n)) : RATE.format(n);
}

/** @param {number | string | null} value @returns {Date | null} */
function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "now", "12 s ago", "5 min ago", "3 h ago", "2 d ago", or "–". @param {Date | null} date */
function ago(date) {
  if (date === null) return "–";
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 2) return "now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/**
 * A point of the x axis: "15 min ago", "10 min", "40 s".
 * @param {number} seconds before now @param {boolean} first whether to add "ago"
 */
function agoLabel(seconds, first) {
  const text = seconds >= 120 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`;
  return first ? `${text} ago` : text;
}

/** HH:MM:SS, local time. @param {Date} date */
function clock(date) {
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((n) => String(n).padStart(2, "0")).join(":");
}

/** The smallest 1, 2 or 5 × 10ⁿ at or above `n` (at least 1). @param {number} n */
function niceCeil(n) {
  if (!(n > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 5, 10]) if (step * power >= n) return step * power;
  return 10 * power;
}

// ---------------------------------------------------------------------------------------------
// Errors and status

/** Show (or, with `err` null, clear) the error of `what` in the banner. */
function setError(/** @type {string} */ what, /** @type {unknown} */ err) {
  if (err === null) errors.delete(what);
  else errors.set(what, `${what}: ${messageOf(err)}`);
  ui.errors.textContent = [...errors.values()].join("\n");
  ui.errors.hidden = errors.size === 0;
}

/**
 * Handle the failure of a call made for `what`: a 401 ends the session, the end of the
 * session itself is expected, anything else is shown in the banner.
 * @param {string} what @param {unknown} err
 */
function failed(what, err) {
  if (err instanceof Unauthorized) return signOut(`The server refused the key (401, ${what}).`);
  if (isAbort(err) || session.controller?.signal.aborted) return; // the view or session ended
  setError(what, err);
}

/** @param {"open" | "connecting" | "reconnecting" | "closed"} state @param {string} text */
function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// The API

/**
 * Call the API with the session's key. Resolves with a successful response; rejects with
 * {@link Unauthorized} on 401 and {@link ApiError} on any other failure.
 * @param {string} path under the base path, e.g. `/api/admin/rooms`
 * @param {RequestInit} [init] @param {AbortSignal} [signal] defaults to the session's
 * @returns {Promise<Response>}
 */
async function api(path, init = {}, signal = session.controller?.signal) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${session.key}`);
  const res = await fetch(`${BASE}${path}`, {
    ...init,
    headers,
    cache: "no-store",
    ...(signal ? { signal } : {}),
  });
  if (res.ok) return res;
  const body = await res.text();
  if (res.status === 401) throw new Unauthorized("401 unauthorized");
  let code = "";
  let message = body.trim() || res.statusText;
  try {
    const parsed = JSON.parse(body);
    code = String(parsed?.error?.code ?? "");
    message = String(parsed?.error?.message ?? message);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err; // not JSON: the body is the message
  }
  throw new ApiError(res.status, code, message);
}

/** {@link api}, answering the parsed JSON body. @param {Parameters<typeof api>} args */
async function apiJson(...args) {
  return await (await api(...args)).json();
}

/** @param {string} room @returns {string} the room as a query parameter value */
function q(room) {
  return encodeURIComponent(room);
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

/** @returns {string} the key kept in this tab, or "" */
function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) ?? "";
  } catch (err) {
    setError("sessionStorage", err);
    return "";
  }
}

/** Keep `key` in this tab (or forget it, with ""). @param {string} key */
function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch (err) {
    setError("sessionStorage (a reload will ask for the key again)", err);
  }
}

/** Show the sign-in form with `message`. @param {string} message */
function showLogin(message) {
  ui.appView.hidden = true;
  ui.logout.hidden = true;
  ui.loginView.hidden = false;
  ui.loginMessage.textContent = message;
  ui.loginSubmit.disabled = false;
  setStatus("closed", "signed out");
  ui.key.focus();
}

/**
 * Try `key`: one `GET /api/admin/rooms`. On success the session starts with that answer as the
 * first poll of the rooms table; on failure the form says why.
 * @param {string} key
 */
async function signIn(key) {
  performance.mark("chorus:signin");
  ui.loginSubmit.disabled = true;
  ui.loginMessage.textContent = "Checking the key…";
  setStatus("connecting", "checking the key…");
  session.key = key;
  let first;
  try {
    first = await apiJson("/api/admin/rooms", {}, AbortSignal.timeout(15_000));
  } catch (err) {
    storeKey("");
    session.key = "";
    if (err instanceof Unauthorized) return showLogin("That key was refused (401).");
    if (err instanceof ApiError && err.status === 404) {
      return showLogin("This server has no admin API (404): start chorus with --api-key.");
    }
    return showLogin(`Cannot check the key: ${messageOf(err)}`);
  }
  storeKey(key);
  ui.key.value = "";
  startSession(first);
}

/** Show the page and start its streams and polls. @param {{ rooms: unknown[] }} firstRooms */
function startSession(firstRooms) {
  session.controller = new AbortController();
  ui.loginView.hidden = true;
  ui.loginMessage.textContent = "";
  ui.appView.hidden = false;
  ui.logout.hidden = false;
  setStatus("connecting", "connecting…");
  applyRooms(firstRooms);
  void streamStats(session.controller.signal);
  void pollRooms(session.controller.signal);
  route();
}

/**
 * End the session: stop every call, forget the key and the numbers, show the sign-in form.
 * @param {string} message why, shown above the form
 */
function signOut(message) {
  session.controller?.abort();
  session.controller = null;
  session.key = "";
  storeKey("");
  closeRoom();
  stats.samples = [];
  stats.previous = null;
  stats.nodes = [];
  stats.rooms = undefined;
  rooms.byName.clear();
  rooms.rowElements.clear();
  rooms.rendered = false;
  ui.roomsBody.replaceChildren();
  errors.clear();
  setError("", null);
  showLogin(message);
}

// ---------------------------------------------------------------------------------------------
// Overview: the stats stream, rates and charts

/**
 * Read `GET /api/admin/stream` until the session ends, reconnecting with backoff. A stream
 * that sends nothing for {@link STALE_MS} (a stats event comes every second) is given up and
 * made again: a proxy or a network may hold a connection open that no longer carries anything.
 * @param {AbortSignal} signal
 */
async function streamStats(signal) {
  let wait = 1000;
  while (!signal.aborted) {
    const attempt = new AbortController();
    let heard = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - heard > STALE_MS) attempt.abort();
    }, 1000);
    try {
      const res = await api(
        "/api/admin/stream",
        { headers: { accept: "text/event-stream" } },
        AbortSignal.any([signal, attempt.signal]),
      );
      setStatus("open", "live");
      setError("Live numbers", null);
      wait = 1000;
      await readEvents(res, (type, data) => {
        if (type === "stats") onStats(JSON.parse(data));
      }, () => heard = Date.now());
      if (!signal.aborted) throw new Error("the stream ended");
    } catch (err) {
      if (signal.aborted) return failed("Live numbers", err);
      failed("Live numbers", attempt.signal.aborted ? `nothing for ${STALE_MS / 1000} s` : err);
      stats.previous = null; // counters after a gap are diffed from the next event on
      setStatus("reconnecting", `reconnecting in ${Math.round(wait / 1000)} s`);
      await delay(wait, signal);
      wait = Math.min(wait * 2, RETRY_MAX_MS);
    } finally {
      clearInterval(watchdog);
    }
  }
}

/**
 * Parse a `text/event-stream` body, calling `onEvent(type, data)` for each event and `onData`
 * for every chunk (pings included).
 * @param {Response} res @param {(type: string, data: string) => void} onEvent
 * @param {() => void} onData
 */
async function readEvents(res, onEvent, onData) {
  if (!res.body) throw new Error("the stream has no body");
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onData();
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const val = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
      }
      if (data.length > 0) onEvent(type, data.join("\n"));
    }
  }
}

/** Counters of one node (or the total) diffed against its previous event into a point. */
function toPoint(
  /** @type {NodeStats} */ now,
  /** @type {NodeStats | undefined} */ before,
  /** @type {number} */ seconds,
) {
  const c = now.connections ?? { raw: 0, chat: 0, sse: 0 };
  /** @param {"received" | "delivered" | "bytesOut"} key */
  const rate = (key) => {
    if (!before || !(seconds > 0)) return null;
    const delta = now[key] - before[key];
    return delta >= 0 ? delta / seconds : null; // a restart resets counters: no rate then
  };
  return {
    raw: c.raw ?? 0,
    chat: c.chat ?? 0,
    sse: c.sse ?? 0,
    all: (c.raw ?? 0) + (c.chat ?? 0) + (c.sse ?? 0),
    received: rate("received"),
    delivered: rate("delivered"),
    bytesOut: rate("bytesOut"),
  };
}

/** One `stats` event: a new sample, then a redraw on the next frame. @param {Stats} event */
function onStats(event) {
  const prev = stats.previous;
  const seconds = prev ? (event.ts - prev.ts) / 1000 : 0;
  /** @type {Map<string, Point>} */
  const points = new Map();
  points.set("total", toPoint(event.total, prev?.total, seconds));
  for (const node of event.nodes ?? []) {
    points.set(
      `node:${node.node}`,
      toPoint(node, prev?.nodes?.find((n) => n.node === node.node), seconds),
    );
  }
  const t = event.ts / 1000;
  stats.samples.push({
    t,
    points,
    refused: event.refused ?? {},
    disconnects: event.disconnects ?? {},
  });
  while ((stats.samples[0]?.t ?? t) < t - WINDOW_S) stats.samples.shift();
  stats.previous = event;
  // By label, so that each worker keeps its colour whichever node answers the stream.
  stats.nodes = (event.nodes ?? []).slice().sort((a, b) =>
    (a.label || a.node).localeCompare(b.label || b.node, "en", { numeric: true })
  );
  stats.rooms = event.total?.rooms;
  if (stats.frame === 0) stats.frame = requestAnimationFrame(renderOverview);
}

/**
 * The three charts: what each shows for the whole cluster (by kind), and which kinds it shows
 * per node when the lines are split by node.
 * `least` is the smallest top of the y axis, so that a quiet chart has sensible labels.
 * @type {{ id: string, title: string, kinds: Kind[], perNode: Kind[], least: number,
 *   format: (n: number) => string }[]}
 */
const CHART_SPECS = [
  {
    id: "chart-connections",
    title: "Connections",
    kinds: [
      { key: "raw", label: "raw · WebSocket" },
      { key: "chat", label: "chat · WebSocket" },
      { key: "sse", label: "chat · SSE" },
    ],
    perNode: [{ key: "all", label: "connections" }],
    least: 2,
    format: (n) => NUMBER.format(Math.round(n)),
  },
  {
    id: "chart-messages",
    title: "Messages per second",
    kinds: [
      { key: "received", label: "received" },
      { key: "delivered", label: "delivered" },
    ],
    perNode: [
      { key: "received", label: "received" },
      { key: "delivered", label: "delivered" },
    ],
    least: 1,
    format: formatRate,
  },
  {
    id: "chart-bytes",
    title: "Bytes out per second",
    kinds: [{ key: "bytesOut", label: "bytes out" }],
    perNode: [{ key: "bytesOut", label: "bytes out" }],
    least: 1000,
    format: formatBytes,
  },
];

/**
 * One line of a chart.
 * @typedef {{ id: string, label: string, color: string, dash: number, node: string,
 *   key: keyof Point }} Series
 */

/**
 * A chart drawn as SVG paths in a 900 × 100 box, stretched to its figure (labels are HTML, so
 * they do not stretch). The x axis spans the samples there are, from {@link MIN_SPAN_S} up to
 * the whole window, so a page opened a minute ago shows that minute across the chart.
 */
class Chart {
  /** @param {HTMLElement} figure @param {typeof CHART_SPECS[number]} spec */
  constructor(figure, spec) {
    this.spec = spec;
    this.legend = h("ul", "legend");
    const caption = h("figcaption");
    caption.append(h("span", "chart-title", spec.title), this.legend);
    this.yLabels = ["y-top", "y-mid", "y-zero"].map((c) => h("span", `y-label ${c}`));
    this.lines = svg("g");
    const plotSvg = svg("svg", {
      viewBox: `0 0 ${WINDOW_S} 100`,
      preserveAspectRatio: "none",
      "aria-hidden": "true",
      focusable: "false",
    });
    const grid = svg("g", { class: "grid" });
    for (const y of [0, 50, 100]) {
      grid.append(
        svg("line", { x1: 0, x2: WINDOW_S, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }),
      );
    }
    for (const x of [300, 600]) {
      grid.append(
        svg("line", { x1: x, x2: x, y1: 0, y2: 100, "vector-effect": "non-scaling-stroke" }),
      );
    }
    plotSvg.append(grid, this.lines);
    const plot = h("div", "plot");
    plot.append(plotSvg, ...this.yLabels);
    const axis = h("div", "x-axis");
    axis.setAttribute("aria-hidden", "true");
    this.xLabels = [0, 1, 2].map(() => h("span"));
    axis.append(...this.xLabels, h("span", "", "now"));
    figure.replaceChildren(caption, plot, axis);
    this.span = 0;
    /** @type {Map<string, { path: SVGElement, value: HTMLElement }>} */
    this.drawn = new Map();
    this.seriesKey = "";
  }

  /** Redraw every line from `samples` (oldest first). @param {Series[]} series @param {Sample[]} samples */
  draw(series, samples) {
    const key = series.map((s) => `${s.id}=${s.label}`).join("|");
    if (key !== this.seriesKey) this.#rebuild(series, key);
    const end = samples.at(-1)?.t ?? 0;
    const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, Math.ceil(end - (samples[0]?.t ?? end))));
    if (span !== this.span) {
      this.span = span;
      this.xLabels.forEach((label, i) => label.textContent = agoLabel(span * (3 - i) / 3, i === 0));
    }
    let max = this.spec.least;
    for (const sample of samples) {
      for (const s of series) max = Math.max(max, sample.points.get(s.node)?.[s.key] ?? 0);
    }
    const top = niceCeil(max);
    const fmt = this.spec.format;
    this.yLabels.forEach((label, i) => label.textContent = fmt(top * (2 - i) / 2));
    for (const s of series) {
      let d = "";
      let lastT = -Infinity;
      for (const sample of samples) {
        const v = sample.points.get(s.node)?.[s.key];
        if (v === null || v === undefined) {
          lastT = -Infinity;
          continue;
        }
        const x = WINDOW_S * (1 - (end - sample.t) / span);
        if (x < 0) continue;
        const y = 100 - (v / top) * 100;
        d += `${sample.t - lastT > GAP_S ? "M" : "L"}${x.toFixed(1)} ${y.toFixed(2)}`;
        lastT = sample.t;
      }
      const drawn = this.drawn.get(s.id);
      if (!drawn) continue;
      drawn.path.setAttribute("d", d);
      const latest = samples.at(-1)?.points.get(s.node)?.[s.key];
      drawn.value.textContent = latest === null || latest === undefined ? "–" : fmt(latest);
    }
  }

  /** New series: new paths and legend entries. @param {Series[]} series @param {string} key */
  #rebuild(series, key) {
    this.seriesKey = key;
    this.drawn.clear();
    this.lines.replaceChildren();
    this.legend.replaceChildren();
    for (const s of series) {
      const path = svg("path", {
        class: `line ${s.color} dash${s.dash}`,
        "vector-effect": "non-scaling-stroke",
        fill: "none",
      });
      this.lines.append(path);
      const item = h("li");
      item.dataset.series = s.id;
      const value = h("span", "value", "–");
      item.append(
        h("span", `swatch ${s.color} dash${s.dash}`),
        h("span", "", `${s.label} `),
        value,
      );
      this.legend.append(item);
      this.drawn.set(s.id, { path, value });
    }
  }
}

/** @type {Chart[]} */
const charts = CHART_SPECS.map((spec) => new Chart($(spec.id), spec));

/** The lines of a chart: by kind for the whole cluster, or per node plus the cluster total. */
function seriesOf(/** @type {typeof CHART_SPECS[number]} */ spec) {
  const nodes = stats.nodes;
  /** @type {Series[]} */
  const series = [];
  if (nodes.length > 1 && ui.split.checked) {
    const many = spec.perNode.length > 1;
    nodes.forEach((node, i) => {
      spec.perNode.forEach((kind, k) => {
        const name = node.label || node.node;
        series.push({
          id: `node:${node.node}:${kind.key}`,
          label: many ? `${name} ${kind.label}` : name,
          color: `c${i % 6}`,
          dash: k,
          node: `node:${node.node}`,
          key: kind.key,
        });
      });
    });
    spec.perNode.forEach((kind, k) => {
      series.push({
        id: `total:${kind.key}`,
        label: many ? `total ${kind.label}` : "total",
        color: "ctotal",
        dash: k,
        node: "total",
        key: kind.key,
      });
    });
    return series;
  }
  return spec.kinds.map((kind, i) => ({
    id: `total:${kind.key}`,
    label: kind.label,
    color: `c${i}`,
    dash: 0,
    node: "total",
    key: kind.key,
  }));
}

/** Redraw the charts, the node line and the counters from the samples. */
function renderOverview() {
  stats.frame = 0;
  const nodes = stats.nodes;
  ui.splitLabel.hidden = nodes.length < 2;
  const rooms = stats.rooms;
  const names = nodes.map((n) => n.label || n.node).join(", ");
  ui.nodesLine.textContent = (nodes.length > 1 ? `${nodes.length} nodes: ${names}` : "1 node") +
    (rooms === undefined ? "" : ` · ${NUMBER.format(rooms)} ${rooms === 1 ? "room" : "rooms"}`);
  charts.forEach((chart) => chart.draw(seriesOf(chart.spec), stats.samples));
  const first = stats.samples[0];
  const last = stats.samples.at(-1);
  if (!first || !last) return;
  const period = `in ${agoLabel(Math.max(MIN_SPAN_S, last.t - first.t), false)}`;
  renderTally(ui.refused, last.refused, first.refused, [], period);
  renderTally(ui.disconnects, last.disconnects, first.disconnects, POLICY_REASONS, period);
}

/** Disconnect reasons that are the server's policy: always listed, also at 0. */
const POLICY_REASONS = ["slow_consumer", "too_big", "rate_limited", "idle"];

/**
 * Counts by reason, each with its growth over the charts' window ("+3 in 15 min"): the reasons
 * in `always`, then every other one that is not 0.
 * @param {HTMLElement} list @param {Record<string, number>} now
 * @param {Record<string, number>} then @param {string[]} always @param {string} period
 */
function renderTally(list, now, then, always, period) {
  const reasons = [
    ...always,
    ...Object.keys(now).filter((r) => !always.includes(r) && (now[r] ?? 0) > 0),
  ];
  const frag = document.createDocumentFragment();
  for (const reason of reasons) {
    const count = now[reason] ?? 0;
    const growth = count - (then[reason] ?? 0);
    const row = h("div", growth > 0 ? "grew" : count > 0 ? "" : "zero");
    row.dataset.reason = reason;
    const dd = h("dd", "", NUMBER.format(count));
    if (growth > 0) dd.append(h("span", "growth", ` +${NUMBER.format(growth)} ${period}`));
    row.append(h("dt", "", reason.replaceAll("_", " ")), dd);
    frag.append(row);
  }
  if (reasons.length === 0) frag.append(h("p", "hint", "None since the server started."));
  list.replaceChildren(frag);
}

// ---------------------------------------------------------------------------------------------
// Rooms table

/** Poll `GET /api/admin/rooms` until the session ends. @param {AbortSignal} signal */
async function pollRooms(signal) {
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
function applyRooms(body) {
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
  if (detail) updateRoomFacts();
}

function scheduleRooms() {
  if (rooms.frame === 0) rooms.frame = requestAnimationFrame(renderRooms);
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

/**
 * Run `rebuild`, which replaces the rows of `container`. A row's link or button that had focus
 * loses it as soon as its row is taken out (into a fragment too), even to be put back: give
 * focus to the same row's control again (rows are told apart by `attr`), so a keyboard user
 * keeps their place across polls.
 * @param {HTMLElement} container @param {string} attr @param {() => void} rebuild
 */
function keepFocus(container, attr, rebuild) {
  const active = document.activeElement;
  const key = active && container.contains(active)
    ? active.closest(`[${attr}]`)?.getAttribute(attr)
    : null;
  rebuild();
  if (key === null || key === undefined || document.activeElement === active) return;
  const row = [...container.querySelectorAll(`[${attr}]`)].find((r) =>
    r.getAttribute(attr) === key
  );
  const control = /** @type {HTMLElement | null | undefined} */ (row?.querySelector("a, button"));
  control?.focus({ preventScroll: true });
}

/** Set `el`'s text only when it changed (no needless layout work). */
function setText(/** @type {HTMLElement} */ el, /** @type {string} */ text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Sort by the header's column; the same column again reverses the order. @param {Event} e */
function onSortClick(e) {
  const th = /** @type {HTMLElement | null} */ (/** @type {Element} */ (e.target).closest("th"));
  const key = /** @type {keyof RoomRow | undefined} */ (th?.dataset.key);
  if (!key) return;
  rooms.sort = rooms.sort.key === key
    ? { key, descending: !rooms.sort.descending }
    : { key, descending: key !== "room" };
  renderRooms();
}

// ---------------------------------------------------------------------------------------------
// Room detail

/** Open or close the room view after the URL's hash (`#room=/lobby`). */
function route() {
  if (!session.controller) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  if (room) openRoom(room);
  else closeRoom();
}

/** Show `room`'s detail and start its polls. @param {string} room */
function openRoom(room) {
  if (detail?.room === room) return;
  closeRoom();
  const session_ = session.controller;
  if (!session_) return;
  const controller = new AbortController();
  detail = {
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
function closeRoom() {
  if (!detail) return;
  detail.controller.abort();
  detail = null;
  ui.roomView.hidden = true;
  ui.roomsView.hidden = false;
  document.title = "chorus admin";
  setError("Members", null);
  setError("Messages", null);
  scheduleRooms();
}

/** The line under the room's heading: members, msg/s, offset, last activity (from the table). */
function updateRoomFacts() {
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

/**
 * Load a page of members: the first (`reset`) or the next one.
 * @param {boolean} reset @param {AbortSignal} signal
 */
async function loadMembers(reset, signal) {
  const open = detail;
  if (!open) return;
  const after = reset ? "" : `&after=${q(open.membersNext ?? "")}`;
  try {
    const page = await apiJson(
      `/api/rooms/members?room=${q(open.room)}&limit=${MEMBERS_PAGE}${after}`,
      {},
      signal,
    );
    if (detail !== open) return;
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

/**
 * Show the room's latest kept messages, then poll for new ones until the view closes.
 * @param {AbortSignal} signal
 */
async function followStream(signal) {
  const open = detail;
  if (!open) return;
  while (!signal.aborted && detail === open) {
    try {
      if (open.epoch === null) await loadLatest(open, signal);
      else await loadNew(open, signal);
      setError("Messages", null);
    } catch (err) {
      failed("Messages", err);
    }
    await delay(STREAM_POLL_MS, signal);
  }
}

/**
 * The newest page of history, shown oldest first: one call for the latest offset, one for the
 * messages below it.
 * @param {Detail} open @param {AbortSignal} signal
 */
async function loadLatest(open, signal) {
  const head = await apiJson(`/api/rooms/history?room=${q(open.room)}&limit=1`, {}, signal);
  const latest = Number(head.offset ?? 0);
  /** @type {Message[]} */
  let messages = [];
  let next = null;
  if (latest > 0) {
    const page = await apiJson(
      `/api/rooms/history?room=${q(open.room)}&before=${latest + 1}&limit=${HISTORY_PAGE}`,
      {},
      signal,
    );
    messages = page.messages ?? [];
    next = page.next ?? null;
  }
  if (detail !== open) return;
  open.epoch = String(head.epoch ?? "");
  open.after = latest;
  open.before = next;
  ui.older.hidden = next === null;
  ui.messages.replaceChildren(...messages.slice().reverse().map(messageItem));
  if (messages.length === 0) ui.messages.append(h("li", "hint empty", "No kept messages."));
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/**
 * New messages after the last one shown; a page that is not the last is followed at once.
 * @param {Detail} open @param {AbortSignal} signal
 */
async function loadNew(open, signal) {
  for (;;) {
    const page = await apiJson(
      `/api/rooms/history?room=${q(open.room)}&after=${open.after}&limit=200`,
      {},
      signal,
    );
    if (detail !== open) return;
    if (String(page.epoch ?? "") !== open.epoch) {
      open.epoch = null; // the stream started over: show its latest page again
      ui.messages.append(h("li", "hint", "The room's stream started over."));
      return;
    }
    /** @type {Message[]} */
    const messages = page.messages ?? [];
    if (messages.length > 0) {
      const log = ui.messages;
      const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      log.querySelector(".empty")?.remove();
      log.append(...messages.map(messageItem));
      for (let n = log.childElementCount - MAX_STREAM_ENTRIES; n > 0; n--) {
        log.firstElementChild?.remove();
      }
      if (stick) log.scrollTop = log.scrollHeight;
      open.after = messages.at(-1)?.offset ?? open.after;
    }
    if (page.next === null || page.next === undefined || messages.length === 0) return;
  }
}

/** Older kept messages, above those shown. */
async function loadOlder() {
  const open = detail;
  if (!open || open.before === null) return;
  ui.older.disabled = true;
  try {
    const page = await apiJson(
      `/api/rooms/history?room=${q(open.room)}&before=${open.before}&limit=${HISTORY_PAGE}`,
      {},
      AbortSignal.any([
        open.controller.signal,
        session.controller?.signal ?? open.controller.signal,
      ]),
    );
    if (detail !== open) return;
    /** @type {Message[]} */
    const messages = page.messages ?? [];
    ui.messages.prepend(...messages.slice().reverse().map(messageItem));
    open.before = page.next ?? null;
    ui.older.hidden = open.before === null;
    setError("Messages", null);
  } catch (err) {
    failed("Messages", err);
  } finally {
    ui.older.disabled = false;
  }
}

/** One message: time, sender, text. @param {Message} m */
function messageItem(m) {
  const li = h("li", m.from?.id === "server" ? "message system" : "message");
  li.dataset.offset = String(m.offset);
  const meta = h("div", "meta");
  const when = new Date(Number(m.ts));
  const time = h("time", "", Number.isNaN(when.getTime()) ? "" : clock(when));
  if (!Number.isNaN(when.getTime())) {
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
  }
  const from = h("span", "from", String(m.from?.name ?? "?"));
  from.title = String(m.from?.id ?? "");
  meta.append(time, " ", from, " ", h("span", "hint", `#${m.offset}`));
  li.append(meta, h("div", "text", String(m.text ?? "")));
  return li;
}

// ---------------------------------------------------------------------------------------------
// Controls, each behind a confirmation

/**
 * Ask for confirmation in the dialog; resolves with the (optional) reason, or null when the
 * operator cancels (Cancel, Escape).
 * @param {{ title: string, text: string, ok: string, reason: boolean }} what
 * @returns {Promise<{ reason: string } | null>}
 */
function confirmAction({ title, text, ok, reason }) {
  ui.confirmTitle.textContent = title;
  ui.confirmText.textContent = text;
  ui.confirmOk.textContent = ok;
  ui.confirmReasonRow.hidden = !reason;
  ui.confirmReason.value = "";
  ui.dialog.returnValue = "";
  /** @type {HTMLDialogElement} */ (ui.dialog).showModal();
  return new Promise((resolve) => {
    ui.dialog.addEventListener("close", () => {
      resolve(ui.dialog.returnValue === "ok" ? { reason: ui.confirmReason.value.trim() } : null);
    }, { once: true });
  });
}

/**
 * Show the outcome of a control in the room view.
 * @param {string} text @param {boolean} ok
 */
function showResult(text, ok) {
  ui.actionResult.textContent = text;
  ui.actionResult.dataset.kind = ok ? "ok" : "error";
  ui.actionResult.hidden = false;
}

/**
 * POST a control's JSON body; shows the result and reloads the members.
 * @param {string} path @param {Record<string, string>} body @param {string} done
 */
async function control(path, body, done) {
  const open = detail;
  try {
    const answer = await apiJson(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    showResult(`${done}${summary(answer)}`, true);
  } catch (err) {
    if (err instanceof Unauthorized) return failed(path, err);
    showResult(`Failed: ${messageOf(err)}`, false);
  }
  if (open && detail === open) void loadMembers(true, open.controller.signal);
}

/**
 * A control's JSON answer in words: `{"disconnected": 2, "relayed": false}` → " (2 connections
 * closed)", `{"delivered": 3, "offset": 9}` → " (delivered to 3 sockets here, offset 9)".
 * @param {any} answer
 */
function summary(answer) {
  if (answer === null || typeof answer !== "object") return "";
  /** @param {number} n @param {string} one */
  const count = (n, one) => `${NUMBER.format(n)} ${one}${n === 1 ? "" : "s"}`;
  const parts = [];
  for (const [key, value] of Object.entries(answer)) {
    if (key === "disconnected") parts.push(`${count(value, "connection")} closed here`);
    else if (key === "relayed") parts.push(value ? "sent to the other nodes" : "");
    else if (key === "delivered") parts.push(`delivered to ${count(value, "socket")} here`);
    else if (key === "offset") parts.push(value === null ? "not stored" : `offset ${value}`);
    else if (key !== "epoch" && (value === null || typeof value !== "object")) {
      parts.push(`${key}: ${value}`);
    }
  }
  const text = parts.filter(Boolean).join(", ");
  return text ? ` (${text})` : "";
}

/** Disconnect one member after confirmation. @param {Member} m */
async function disconnectMember(m) {
  const open = detail;
  if (!open) return;
  const answer = await confirmAction({
    title: `Disconnect ${m.name}?`,
    text: `${m.name} (${m.id}, ${m.mode}) is disconnected from ${open.room} with close code ` +
      "4003. Every connection with this id in the room is closed; clients may reconnect.",
    ok: "Disconnect",
    reason: true,
  });
  if (!answer || detail !== open) return;
  await control(
    "/api/admin/disconnect",
    { room: open.room, id: m.id, ...(answer.reason ? { reason: answer.reason } : {}) },
    `Disconnected ${m.name} (${m.id})`,
  );
}

/** Close the open room after confirmation. */
async function closeTheRoom() {
  const open = detail;
  if (!open) return;
  const answer = await confirmAction({
    title: `Close ${open.room}?`,
    text: `Every member of ${open.room} is disconnected with close code 4004.`,
    ok: "Close room",
    reason: true,
  });
  if (!answer || detail !== open) return;
  await control(
    "/api/admin/close-room",
    { room: open.room, ...(answer.reason ? { reason: answer.reason } : {}) },
    `Closed ${open.room}`,
  );
}

/** Post the typed system message after confirmation. @param {SubmitEvent} e */
async function onPostSubmit(e) {
  e.preventDefault();
  const open = detail;
  const text = ui.postText.value;
  if (!open || text.trim() === "") return;
  const answer = await confirmAction({
    title: `Post to ${open.room}?`,
    text: `As "system", to every member, kept in the room's history: ${text}`,
    ok: "Post",
    reason: false,
  });
  if (!answer || detail !== open) return;
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

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  ui.loginForm.addEventListener("submit", (/** @type {SubmitEvent} */ e) => {
    e.preventDefault();
    const key = ui.key.value.trim();
    if (key === "") {
      ui.loginMessage.textContent = "Enter the API key.";
      return ui.key.focus();
    }
    void signIn(key);
  });
  ui.logout.addEventListener("click", () => signOut("Signed out."));
  ui.roomsTable.tHead.addEventListener("click", onSortClick);
  ui.filter.addEventListener("input", () => {
    rooms.shown = ROWS_STEP;
    scheduleRooms();
  });
  ui.roomsMore.addEventListener("click", () => {
    rooms.shown += ROWS_STEP;
    renderRooms();
  });
  ui.split.addEventListener("change", renderOverview);
  ui.membersMore.addEventListener("click", () => {
    if (detail) void loadMembers(false, detail.controller.signal);
  });
  ui.membersRefresh.addEventListener("click", () => {
    if (detail) void loadMembers(true, detail.controller.signal);
  });
  ui.older.addEventListener("click", () => void loadOlder());
  ui.postForm.addEventListener("submit", (/** @type {SubmitEvent} */ e) => void onPostSubmit(e));
  ui.closeRoom.addEventListener("click", () => void closeTheRoom());
  ui.dialog.addEventListener("submit", (/** @type {SubmitEvent} */ e) => {
    // The dialog's buttons close it with their value; no form is ever submitted anywhere.
    e.preventDefault();
    ui.dialog.close(/** @type {HTMLButtonElement | null} */ (e.submitter)?.value ?? "");
  });
  addEventListener("hashchange", route);
  const key = storedKey();
  if (key) void signIn(key);
  else showLogin("");
}

start();
