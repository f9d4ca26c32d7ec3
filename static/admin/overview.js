// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The overview: `GET /api/admin/stream` gives cumulative counters once a second; successive
 * events are diffed into rates, kept as samples over the charts' window and drawn as the three
 * charts, the node line and the counts of refused upgrades and disconnects by reason.
 * @module
 */
import { api, delay, readEvents } from "./api.js";
import { Chart, CHART_SPECS, MIN_SPAN_S, WINDOW_S } from "./charts.js";
import { $, h, ui } from "./dom.js";
import { agoLabel, NUMBER } from "./format.js";
import { failed, setError, setStatus } from "./status.js";
/** @import { Point, Sample, Series } from "./charts.js" */

const RETRY_MAX_MS = 15_000;
/** A stats stream that sends nothing for this long is made again. */
const STALE_MS = 10_000;

/**
 * @typedef {{ raw: number, chat: number, sse: number }} Connections
 * @typedef {{ node: string, label?: string, connections: Connections, received: number,
 *   delivered: number, bytesOut: number, rooms: number }} NodeStats
 * @typedef {{ ts: number, nodes: NodeStats[], total: NodeStats,
 *   refused: Record<string, number>, disconnects: Record<string, number> }} Stats
 */

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

/** Forget the numbers (the session ended). */
export function resetStats() {
  stats.samples = [];
  stats.previous = null;
  stats.nodes = [];
  stats.rooms = undefined;
}

/**
 * Read `GET /api/admin/stream` until the session ends, reconnecting with backoff. A stream
 * that sends nothing for {@link STALE_MS} (a stats event comes every second) is given up and
 * made again: a proxy or a network may hold a connection open that no longer carries anything.
 * @param {AbortSignal} signal
 */
export async function streamStats(signal) {
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
export function renderOverview() {
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
