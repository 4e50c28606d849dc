// The cursor readout under a chart, and how the cursor finds each line's nearest reading:
// lines of different devices have their own timestamps, so "the reading at the cursor" is the
// nearest one of each line, not one at exactly the cursor's time.

import { closestIndex } from "./join.js";

// The index of line seriesIdx's reading nearest the cursor, with each line's own x values
// (uPlot's mode 2); null when the cursor is off the chart.
export function nearestTime(u, seriesIdx) {
  const xs = u.data[seriesIdx]?.[0];
  if (!xs?.length || u.cursor.left === undefined || u.cursor.left < 0) return null;
  return closestIndex(xs, u.posToVal(u.cursor.left, "x"));
}

// The cursor readout under the chart: its time, then each line's nearest reading (and the
// band's min-max). DOM made once per chart; text written only when it changes.
export class Readout {
  // fmt(u, value) and time(ms) format a value and the cursor's time.
  constructor(series, fmt, time) {
    this.series = series;
    this.fmt = fmt;
    this.formatTime = time;
    this.time = el("span", "time");
    this.values = series.map(() => el("span", "value"));
    this.node = el("div", "readout");
    this.node.append(this.time);
    series.forEach((s, i) => {
      const item = el("span", "item");
      const name = el("span", "name");
      name.style.color = s.color;
      name.textContent = s.name;
      item.append(name, this.values[i]);
      this.node.append(item);
    });
  }

  show(u) {
    const left = u.cursor.left;
    const on = left !== undefined && left >= 0;
    set(this.time, on ? this.formatTime(u.posToVal(left, "x")) : "");
    let si = 1;
    this.series.forEach((s, i) => {
      const parts = [this.value(u, si, on)];
      if (s.band) parts.push(` (${this.value(u, si + 1, on)} – ${this.value(u, si + 2, on)})`);
      set(this.values[i], parts.join(""));
      si += s.band ? 3 : 1;
    });
  }

  value(u, si, on) {
    if (!on) return "–";
    if (u.mode === 2) {
      const i = nearestTime(u, si);
      return this.fmt(u, i === null ? null : u.data[si][1][i]);
    }
    const i = u.cursor.idx;
    return this.fmt(u, i === null || i === undefined ? null : u.data[si][nearestValue(u.data[si], i)]);
  }
}

function el(tag, cls) {
  const node = document.createElement(tag);
  node.className = cls;
  return node;
}

function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// With one shared x column (uPlot's usual mode): the nearest row from i where the line has a
// value.
export function nearestValue(ys, i) {
  if (!ys || ys[i] !== null) return i;
  for (let d = 1; d < 400; d++) {
    if (i - d >= 0 && ys[i - d] !== null && ys[i - d] !== undefined) return i - d;
    if (i + d < ys.length && ys[i + d] !== null) return i + d;
    if (i - d < 0 && i + d >= ys.length) break;
  }
  return i;
}
