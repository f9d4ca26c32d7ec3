// @ts-check
/// <reference lib="dom" />
/**
 * What the admin page tells the operator about its connection: the status line, and the error
 * banner, which lists what failed until a later success of the same thing clears it. A 401
 * ends the session through the handler set with {@link onUnauthorized}.
 * @module
 */
import { isAbort, messageOf, session, Unauthorized } from "./api.js";
import { ui } from "./dom.js";

/** Errors shown in the banner, by what failed; a later success of the same thing clears it. */
const errors = new Map();

/** @type {(message: string) => void} what ends the session, see {@link onUnauthorized} */
let endSession = () => {};

/**
 * Set what ends the session when the server refuses the key (`signOut` of login.js).
 * @param {(message: string) => void} signOut called with why, for the sign-in form
 */
export function onUnauthorized(signOut) {
  endSession = signOut;
}

/** Show (or, with `err` null, clear) the error of `what` in the banner. */
export function setError(/** @type {string} */ what, /** @type {unknown} */ err) {
  if (err === null) errors.delete(what);
  else errors.set(what, `${what}: ${messageOf(err)}`);
  ui.errors.textContent = [...errors.values()].join("\n");
  ui.errors.hidden = errors.size === 0;
}

/** Forget every error and hide the banner. */
export function clearErrors() {
  errors.clear();
  setError("", null);
}

/**
 * Handle the failure of a call made for `what`: a 401 ends the session, the end of the
 * session itself is expected, anything else is shown in the banner.
 * @param {string} what @param {unknown} err
 */
export function failed(what, err) {
  if (err instanceof Unauthorized) return endSession(`The server refused the key (401, ${what}).`);
  if (isAbort(err) || session.controller?.signal.aborted) return; // the view or session ended
  setError(what, err);
}

/** @param {"open" | "connecting" | "reconnecting" | "closed"} state @param {string} text */
export function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}
