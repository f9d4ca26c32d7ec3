// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The open room's messages: its latest kept page, then new ones as `GET /api/rooms/history?after=`
 * is polled, and older pages on request.
 * @module
 */
import { apiJson, delay, q, session } from "./api.js";
import { current } from "./detail.js";
import { h, ui } from "./dom.js";
import { clock } from "./format.js";
import { failed, setError } from "./status.js";
/** @import { Detail } from "./detail.js" */

const STREAM_POLL_MS = 1000;
const HISTORY_PAGE = 50;
/** Messages kept in a room's stream view; older ones are removed as new ones arrive. */
const MAX_STREAM_ENTRIES = 500;

/**
 * @typedef {{ type: string, id: string, from: { id: string, name: string }, text: string,
 *   ts: number, offset: number }} Message
 */

/**
 * Show the room's latest kept messages, then poll for new ones until the view closes.
 * @param {AbortSignal} signal
 */
export async function followStream(signal) {
  const open = current.detail;
  if (!open) return;
  while (!signal.aborted && current.detail === open) {
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
  if (current.detail !== open) return;
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
    if (current.detail !== open) return;
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
export async function loadOlder() {
  const open = current.detail;
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
    if (current.detail !== open) return;
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
