// Charts as SVG, drawn from numbers: stacked bars over time and horizontal bars with a
// marker. No library: a chart here is a few rectangles and labels. Each chart is an
// image with a title and a description for assistive technology; the app that draws one
// also shows its numbers as a table. Colours come from classes (.series-0 … .series-7,
// styled by the app's sheet), so light and dark themes restyle them.

import { element, uniqueId } from "/desktop/ui.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const SERIES_CLASSES = 8;
const LEGEND_MAX = 12; // series beyond this many are drawn but named only in the table

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value != null) node.setAttribute(name, String(value));
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/** A round upper bound for an axis: 1, 2 or 5 times a power of ten, at least `value`. */
function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((bound) => bound >= value);
}

function frame(title, description, height) {
  const titleId = uniqueId("chart-title");
  const descriptionId = uniqueId("chart-desc");
  return svg("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${height}`, role: "img",
    "aria-labelledby": `${titleId} ${descriptionId}`,
  }, svg("title", { id: titleId }, title), svg("desc", { id: descriptionId }, description));
}

function legend(names) {
  const shown = names.slice(0, LEGEND_MAX);
  return element("ul", { class: "chart-legend", "aria-hidden": "true" }, ...shown.map((name, i) =>
    element("li", {}, element("span", { class: `chart-swatch series-${i % SERIES_CLASSES}` }), name)),
  names.length > LEGEND_MAX ? element("li", { class: "muted" }, `and ${names.length - LEGEND_MAX} more`) : null);
}

/**
 * Stacked vertical bars, one per label (a day), one colour per series.
 * series: [{name, values}] with values aligned to labels; format(n) writes an axis value.
 */
export function stackedBars({ title, labels, series, format = String }) {
  const height = 220;
  const bottom = 36;
  const top = 12;
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const bound = niceCeiling(Math.max(0, ...totals));
  const ticks = [0, 0.5, 1].map((fraction) => bound * fraction);
  // Room for the longest axis label, at about 6.6 px a character of the 11 px axis font.
  const left = Math.max(40, 14 + 6.6 * Math.max(...ticks.map((tick) => format(tick).length)));
  const plotHeight = height - top - bottom;
  const slot = (WIDTH - left - 8) / Math.max(labels.length, 1);
  const barWidth = Math.max(2, Math.min(48, slot * 0.7));
  const y = (value) => top + plotHeight * (1 - value / bound);
  const chart = frame(title, `${labels.length} bars, largest ${format(Math.max(0, ...totals))}; `
    + "the table below lists every value.", height);
  for (const tick of ticks) {
    chart.append(
      svg("line", { class: "chart-grid", x1: left, x2: WIDTH - 4, y1: y(tick), y2: y(tick) }),
      svg("text", { class: "chart-axis", x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, format(tick)),
    );
  }
  const labelEvery = Math.ceil(labels.length / 10); // at most ten dates under the axis
  labels.forEach((label, i) => {
    const x = left + slot * i + (slot - barWidth) / 2;
    let base = 0;
    series.forEach((s, k) => {
      const value = s.values[i] ?? 0;
      if (value > 0) {
        chart.append(svg("rect", {
          class: `series-${k % SERIES_CLASSES}`, x, width: barWidth,
          y: y(base + value), height: Math.max(1, y(base) - y(base + value)),
        }, svg("title", {}, `${label} · ${s.name}: ${format(value)}`)));
      }
      base += value;
    });
    if (i % labelEvery === 0) {
      chart.append(svg("text", {
        class: "chart-axis", x: x + barWidth / 2, y: height - bottom + 16, "text-anchor": "middle",
      }, label));
    }
  });
  return element("figure", { class: "chart-figure" }, chart, legend(series.map((s) => s.name)));
}

/**
 * Horizontal bars, one per item [{label, value}] (null: no bar, `missing` said instead),
 * with an optional vertical marker {value, label} (what is measured, say).
 */
export function horizontalBars({ title, items, marker = null, format = String, missing = "—" }) {
  const row = 30;
  const left = 190;
  const right = 90;
  const height = items.length * row + 34;
  const values = items.map((item) => item.value ?? 0).concat(marker ? [marker.value] : []);
  const bound = niceCeiling(Math.max(0, ...values));
  const x = (value) => left + (WIDTH - left - right) * (value / bound);
  const chart = frame(title, `${items.length} bars; the table below lists every value.`, height);
  items.forEach((item, i) => {
    const top = 8 + i * row;
    chart.append(svg("text", { class: "chart-label", x: left - 8, y: top + 16, "text-anchor": "end" }, item.label));
    if (item.value == null) {
      chart.append(svg("text", { class: "chart-axis", x: left + 4, y: top + 16 }, missing));
      return;
    }
    const end = x(item.value);
    chart.append(
      svg("rect", { class: `series-${i % SERIES_CLASSES}`, x: left, y: top + 4, width: Math.max(1, end - left), height: row - 10 }),
      svg("text", { class: "chart-axis", x: end + 6, y: top + 16 }, format(item.value)),
    );
  });
  if (marker) {
    const at = x(marker.value);
    chart.append(
      svg("line", { class: "chart-marker", x1: at, x2: at, y1: 2, y2: height - 22 }),
      svg("text", { class: "chart-marker-label", x: at, y: height - 8, "text-anchor": "middle" },
        `${marker.label}: ${format(marker.value)}`),
    );
  }
  return element("figure", { class: "chart-figure" }, chart);
}
