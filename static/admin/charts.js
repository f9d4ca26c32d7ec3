// @ts-check
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The overview's three charts, hand-made SVG lines over the last {@link WINDOW_S} seconds:
 * what each chart shows ({@link CHART_SPECS}) and how one is drawn ({@link Chart}).
 * @module
 */
import { h, svg } from "./dom.js";
import { agoLabel, formatBytes, formatRate, niceCeil, NUMBER } from "./format.js";

/** Seconds of history the charts show. */
export const WINDOW_S = 15 * 60;
/** The shortest time the charts' x axis spans, in seconds. */
export const MIN_SPAN_S = 60;
/** Two samples further apart than this are not joined by a line (the stream was down). */
const GAP_S = 3.5;

/**
 * @typedef {{ raw: number, chat: number, sse: number, all: number, received: number | null,
 *   delivered: number | null, bytesOut: number | null }} Point
 * @typedef {{ t: number, points: Map<string, Point>, refused: Record<string, number>,
 *   disconnects: Record<string, number> }} Sample
 * @typedef {{ key: keyof Point, label: string }} Kind
 */

/**
 * The three charts: what each shows for the whole cluster (by kind), and which kinds it shows
 * per node when the lines are split by node.
 * `least` is the smallest top of the y axis, so that a quiet chart has sensible labels.
 * @type {{ id: string, title: string, kinds: Kind[], perNode: Kind[], least: number,
 *   format: (n: number) => string }[]}
 */
export const CHART_SPECS = [
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
export class Chart {
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
