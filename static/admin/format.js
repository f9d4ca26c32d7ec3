// @ts-check
/**
 * How the admin page writes numbers, sizes, rates and times.
 * @module
 */

export const NUMBER = new Intl.NumberFormat("en");
const RATE = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

/** "1.2 KB", "340 B", "5.1 MB". @param {number} n */
export function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? Math.round(n) : RATE.format(n)} ${units[i]}`;
}

/** A rate: one decimal below 100, or "–" when it is not known yet. @param {number | null} n */
export function formatRate(n) {
  return n === null ? "–" : n >= 100 ? NUMBER.format(Math.round(n)) : RATE.format(n);
}

/** @param {number | string | null} value @returns {Date | null} */
export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "now", "12 s ago", "5 min ago", "3 h ago", "2 d ago", or "–". @param {Date | null} date */
export function ago(date) {
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
export function agoLabel(seconds, first) {
  const text = seconds >= 120 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`;
  return first ? `${text} ago` : text;
}

/** HH:MM:SS, local time. @param {Date} date */
export function clock(date) {
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((n) => String(n).padStart(2, "0")).join(":");
}

/** The smallest 1, 2 or 5 × 10ⁿ at or above `n` (at least 1). @param {number} n */
export function niceCeil(n) {
  if (!(n > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 5, 10]) if (step * power >= n) return step * power;
  return 10 * power;
}
