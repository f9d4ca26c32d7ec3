// @ts-check
/// <reference lib="dom" />
/**
 * Signing in and out. The page asks for the API key once, keeps it in `sessionStorage` (this
 * tab only) and checks it with one `GET /api/admin/rooms`; a good key starts the session's
 * streams and polls. Signing out, or any 401 later, stops them, forgets the key and the numbers
 * and shows the sign-in form again.
 * @module
 */
import { ApiError, apiJson, messageOf, session, Unauthorized } from "./api.js";
import { ui } from "./dom.js";
import { resetStats, streamStats } from "./overview.js";
import { closeRoom, route } from "./room.js";
import { applyRooms, pollRooms, resetRooms } from "./rooms.js";
import { clearErrors, setError, setStatus } from "./status.js";

const KEY_STORAGE = "chorus.admin.key";

/** @returns {string} the key kept in this tab, or "" */
export function storedKey() {
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
export function showLogin(message) {
  ui.appView.hidden = true;
  ui.logout.hidden = true;
  ui.loginView.hidden = false;
  ui.loginMessage.textContent = message;
  ui.loginSubmit.disabled = false;
  setStatus("closed", "signed out");
  ui.key.focus();
}

/** The sign-in form was submitted: try its key. @param {SubmitEvent} e */
export function onLoginSubmit(e) {
  e.preventDefault();
  const key = ui.key.value.trim();
  if (key === "") {
    ui.loginMessage.textContent = "Enter the API key.";
    return ui.key.focus();
  }
  void signIn(key);
}

/**
 * Try `key`: one `GET /api/admin/rooms`. On success the session starts with that answer as the
 * first poll of the rooms table; on failure the form says why.
 * @param {string} key
 */
export async function signIn(key) {
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
export function signOut(message) {
  session.controller?.abort();
  session.controller = null;
  session.key = "";
  storeKey("");
  closeRoom();
  resetStats();
  resetRooms();
  clearErrors();
  showLogin(message);
}
