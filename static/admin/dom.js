// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The admin page's elements, by role ({@link ui}), and the small helpers that build and update
 * them: {@link h} and {@link svg} make elements, {@link setText} and {@link keepFocus} change
 * them without needless work or a lost focus.
 * @module
 */

const SVG_NS = "http://www.w3.org/2000/svg";

/** The element with `id`. @param {string} id @returns {any} */
export const $ = (id) => document.getElementById(id);

/** The page's elements (static/admin.html), looked up once. */
export const ui = {
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

/**
 * Create an element with an optional class name and text content.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag @param {string} [className] @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, className = "", text = "") {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text) el.textContent = text;
  return el;
}

/**
 * An SVG element with attributes.
 * @param {string} tag @param {Record<string, string | number>} [attrs] @returns {SVGElement}
 */
export function svg(tag, attrs = {}) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  return el;
}

/** Set `el`'s text only when it changed (no needless layout work). */
export function setText(/** @type {HTMLElement} */ el, /** @type {string} */ text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Run `rebuild`, which replaces the rows of `container`. A row's link or button that had focus
 * loses it as soon as its row is taken out (into a fragment too), even to be put back: give
 * focus to the same row's control again (rows are told apart by `attr`), so a keyboard user
 * keeps their place across polls.
 * @param {HTMLElement} container @param {string} attr @param {() => void} rebuild
 */
export function keepFocus(container, attr, rebuild) {
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
