// @ts-check
/// <reference lib="dom" />
/**
 * What every control of the room view shares: the confirmation dialog, the POST of a control's
 * JSON body, and the line that shows its outcome in words.
 * @module
 */
import { apiJson, messageOf, Unauthorized } from "./api.js";
import { ui } from "./dom.js";
import { NUMBER } from "./format.js";
import { failed } from "./status.js";

/**
 * Ask for confirmation in the dialog; resolves with the (optional) reason, or null when the
 * operator cancels (Cancel, Escape).
 * @param {{ title: string, text: string, ok: string, reason: boolean }} what
 * @returns {Promise<{ reason: string } | null>}
 */
export function confirmAction({ title, text, ok, reason }) {
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

/** The dialog's buttons close it with their value; no form is ever submitted anywhere. */
export function onDialogSubmit(/** @type {SubmitEvent} */ e) {
  e.preventDefault();
  ui.dialog.close(/** @type {HTMLButtonElement | null} */ (e.submitter)?.value ?? "");
}

/**
 * Show the outcome of a control in the room view.
 * @param {string} text @param {boolean} ok
 */
export function showResult(text, ok) {
  ui.actionResult.textContent = text;
  ui.actionResult.dataset.kind = ok ? "ok" : "error";
  ui.actionResult.hidden = false;
}

/**
 * POST a control's JSON body and show the result (the caller then reloads the members).
 * @param {string} path @param {Record<string, string>} body @param {string} done
 */
export async function control(path, body, done) {
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
}

/**
 * A control's JSON answer in words: `{"disconnected": 2, "relayed": false}` → " (2 connections
 * closed)", `{"delivered": 3, "offset": 9}` → " (delivered to 3 sockets here, offset 9)".
 * @param {any} answer
 */
export function summary(answer) {
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
