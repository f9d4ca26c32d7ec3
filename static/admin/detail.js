// @ts-check
/**
 * Which room's detail is open (`#room=/path`), shared by the room view's parts: its own abort
 * controller (closing the room view stops its polls), the position of its stream, and the next
 * page of members and of older history. A part that awaited checks `current.detail` is still
 * the room it started for before it shows anything.
 * @module
 */

/**
 * @typedef {{ room: string, controller: AbortController, epoch: string | null, after: number,
 *   before: number | null, membersNext: string | null, memberCount: number }} Detail
 */

/** The open room, or null while the rooms table is shown. */
export const current = {
  /** @type {Detail | null} */
  detail: null,
};
