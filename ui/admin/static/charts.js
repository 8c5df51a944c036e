// Small charts drawn as inline SVG with DOM APIs: no chart library, nothing fetched from another host.
//
// A chart plots one or more series of samples ({t, value}: t the end of the sample's interval in Unix seconds,
// value a number or null for "nothing measured"). Each sample covers the `interval` seconds that end at t, so a
// line is drawn as steps (flat over each interval) and a bar spans its interval; a null value, or a gap between
// samples, breaks the line. The plot stretches to its box (the strokes keep their width); the labels are HTML
// around it, so they stay readable at any width. Colours come from app.css (.chart-tone-*), never from style
// attributes, which the Content-Security-Policy forbids.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300; // the plot's coordinate space; CSS sets its size on the page
const HEIGHT = 100;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children) if (child) el.appendChild(child);
  return el;
}

/** formatNumber writes a value with the precision a glance needs: 1234, 12.3, 1.23, 0.012; "—" for none. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const size = Math.abs(value);
  const digits = size >= 100 || Number.isInteger(value) ? 0 : size >= 10 ? 1 : size >= 1 ? 2 : 3;
  return String(Number(value.toFixed(digits)));
}

/** clock is a Unix time (seconds) as the local time of day: hours and minutes, and with `exact` the seconds. */
function clock(t, exact = false) {
  const parts = { hour: "2-digit", minute: "2-digit", second: exact ? "2-digit" : undefined };
  return new Date(t * 1000).toLocaleTimeString(undefined, parts);
}

/** span says how long a time span is, in words: "50 seconds", "12 minutes", "1 hour". */
function span(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} seconds`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(minutes / 6) / 10;
  return hours === 1 ? "1 hour" : `${hours} hours`;
}

/** niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten, so the axis label is a round number. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((m) => m * power >= value);
  return step * power;
}

/** extent is the time span the samples cover: from the start of the first interval to the end of the last. */
function extent(series, interval) {
  const times = series.flatMap((s) => s.points.map((p) => p.t));
  if (!times.length) return null;
  return { from: Math.min(...times) - interval, to: Math.max(...times) };
}

/** linePath is the `d` of a stepped line through `points`, broken at null values and at gaps between samples. */
function linePath(points, interval, x, y) {
  const parts = [];
  let last = null;
  for (const point of points) {
    if (point.value === null || point.value === undefined) {
      last = null;
      continue;
    }
    const start = x(point.t - interval);
    const level = y(point.value);
    // Contiguous with the sample before (its interval ended where this one starts): a vertical step joins them.
    if (last !== null && point.t - last.t <= interval * 1.5) parts.push(`V${level.toFixed(2)}`);
    else parts.push(`M${start.toFixed(2)},${level.toFixed(2)}`);
    parts.push(`H${x(point.t).toFixed(2)}`);
    last = point;
  }
  return parts.join("");
}

/** barPath is the `d` of a series' bars, stacked on `base` (the tops of the series below, by sample time). */
function barPath(points, interval, x, y, base) {
  const parts = [];
  const gap = Math.min(0.8, (x(interval) - x(0)) * 0.15);
  for (const point of points) {
    if (!point.value) continue;
    const below = base.get(point.t) || 0;
    const top = below + point.value;
    base.set(point.t, top);
    const left = x(point.t - interval) + gap / 2;
    const right = Math.max(left + 0.3, x(point.t) - gap / 2);
    const y0 = y(below);
    const y1 = y(top);
    parts.push(`M${left.toFixed(2)},${y0.toFixed(2)}V${y1.toFixed(2)}H${right.toFixed(2)}V${y0.toFixed(2)}Z`);
  }
  return parts.join("");
}

/** latestOf is a series' last sample, or null when it has none. */
function latestOf(series) {
  return series.points.length ? series.points[series.points.length - 1] : null;
}

/**
 * chart is a card with a small chart of `series`: [{name, points: [{t, value}], tone}] (tone: "accent", "danger",
 * "ok"; a single series may be given as `points`). kind "line" draws stepped lines, "bar" stacked bars. The card
 * shows the `title` (an h2), the latest value of each series as text (`format(value)` + `unit`; `empty` when a
 * series' latest value is null), the axis' lowest and highest values, and the times the plot spans. The plot is
 * an <svg role="img"> whose aria-label (named `name`, else `title`) says the same in a sentence, with the time of
 * the latest sample. `interval` is the seconds each sample covers.
 */
export function chart({
  title, series, points, kind = "line", unit = "", interval = 10, format = formatNumber, empty = "none", name,
}) {
  const all = series || [{ name: title, points: points || [], tone: "accent" }];
  const when = extent(all, interval);
  const stacked = new Map();
  if (kind === "bar") {
    for (const s of all) for (const p of s.points) stacked.set(p.t, (stacked.get(p.t) || 0) + (p.value || 0));
  }
  const values = kind === "bar" ? [...stacked.values()] : all.flatMap((s) => s.points.map((p) => p.value));
  const measured = values.filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...measured));
  const x = when
    ? (t) => ((t - when.from) / Math.max(when.to - when.from, 1)) * WIDTH
    : () => 0;
  const y = (value) => HEIGHT - (value / top) * HEIGHT;

  const withUnit = (value) => (value === null || value === undefined ? empty : `${format(value)}${unit}`);
  const latest = all.map((s) => ({ series: s, point: latestOf(s) }));
  const readings = latest.map(({ series: s, point }) => (all.length > 1 ? `${s.name}: ` : "") + withUnit(point?.value ?? null));
  const at = when ? clock(when.to, true) : null;
  const close = when ? when.to - when.from < 600 : false; // a span of minutes: its ends need their seconds

  const plot = svg(
    "svg",
    {
      class: "chart-plot", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img",
      "aria-label": when
        ? `${name || title}: latest ${readings.join(", ")} at ${at}; over the last ${span(when.to - when.from)} `
          + `the axis runs from 0 to ${format(top)}${unit}.`
        : `${name || title}: no samples yet.`,
    },
    svg("line", { class: "chart-grid", x1: 0, y1: HEIGHT / 2, x2: WIDTH, y2: HEIGHT / 2 }),
    svg("line", { class: "chart-axis", x1: 0, y1: HEIGHT, x2: WIDTH, y2: HEIGHT }),
  );
  const base = new Map(); // bars: each series' bars stand on the tops of the series before it
  for (const s of all) {
    const d = kind === "bar" ? barPath(s.points, interval, x, y, base) : linePath(s.points, interval, x, y);
    plot.appendChild(svg("path", { class: `chart-${kind} chart-tone-${s.tone || "accent"}`, d, "data-series": s.name }));
  }

  return h(
    "section",
    { class: "card chart", dataset: { chart: name || title } },
    h("h2", {}, title),
    h(
      "p",
      { class: "chart-latest" },
      latest.map(({ series: s, point }, i) => h(
        "span",
        { class: `chart-reading chart-tone-${s.tone || "accent"}` },
        all.length > 1 ? h("span", { class: "chart-key" }, `${s.name} `) : null,
        h("strong", { class: "chart-value" }, withUnit(point?.value ?? null)),
        i < latest.length - 1 ? " " : null,
      )),
    ),
    h(
      "div",
      { class: "chart-body" },
      h("div", { class: "chart-y", "aria-hidden": "true" },
        h("span", { class: "chart-max" }, `${format(top)}${unit}`), h("span", { class: "chart-min" }, `0${unit}`)),
      plot,
      h("div", { class: "chart-x", "aria-hidden": "true" },
        h("span", { class: "chart-from" }, when ? clock(when.from, close) : ""),
        h("span", { class: "chart-to" }, when ? clock(when.to, close) : "")),
    ),
  );
}
