// Time-series charts on uPlot (vendored in static/vendor, loaded before this module): cursor
// readout, drag to zoom, shift-drag to pan, double-click to reset, alert markers, min/max bands.
// uPlot draws thousands of points per series on a canvas in well under a frame; this module
// only turns our series ([[ms, value], ...] per device) into its column layout (join.js, kept
// between redraws) and owns the zoom state, so every chart behaves the same.

import { Join, Lines, closestIndex, extent } from "./join.js";
import { Readout, nearestTime, nearestValue } from "./readout.js";

const uPlot = window.uPlot;

export const HELP =
  "Drag across a chart to zoom into that time range; shift-drag to pan; double-click to reset.";

// Colours come from the page's CSS variables, so the charts follow the light or dark theme.
function themeColors() {
  const css = getComputedStyle(document.documentElement);
  const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return {
    axis: get("--muted", "#8a93a6"),
    grid: get("--grid", "rgba(138, 147, 166, 0.14)"),
    text: get("--text", "#e7eaf1"),
    severity: {
      critical: get("--crit", "#ff4d5e"),
      high: get("--high", "#ff8a3d"),
      warning: get("--warn", "#f5b942"),
      info: get("--info", "#5aa9ff"),
    },
  };
}

export class TimeChart {
  // box: the element the chart lives in. height: of the plot in CSS pixels.
  // onZoom(range | null): the user zoomed, panned ([fromMs, toMs]) or reset (null); without it
  // the chart zooms itself. sync: a key shared by charts whose cursors move together.
  constructor(box, { height = 170, unit = "", onZoom = null, sync = null } = {}) {
    this.box = box;
    this.height = height;
    this.unit = unit;
    this.onZoom = onZoom;
    this.sync = sync;
    this.plot = null;
    this.signature = "";
    this.series = []; // [{name, color, points, band?: {min: points, max: points}}]
    this.base = [0, 1]; // the x range when not zoomed
    this.zoom = null;
    this.markers = []; // [{t, severity}]
    this.join = null; // the series as uPlot's data (join.js), updated in place
    this.dirty = true;
    this.resize = new ResizeObserver(() => {
      if (this.plot && this.box.clientWidth) {
        this.plot.setSize({ width: this.box.clientWidth, height: this.height });
      }
    });
    this.resize.observe(box);
  }

  // The lines may grow at the end and lose readings at the front between redraws (the chart
  // joins only that); after any other change to a line's readings, call invalidate().
  setSeries(series) {
    this.series = series;
    this.dirty = true;
  }

  invalidate() {
    this.join?.invalidate();
    this.dirty = true;
  }

  setBase(range) {
    this.base = range;
    this.dirty = true;
  }

  setZoom(range) {
    this.zoom = range;
    this.dirty = true;
  }

  setMarkers(markers) {
    this.markers = markers;
    this.dirty = true;
  }

  xRange() {
    return this.zoom || this.base;
  }

  // The scales as drawn (tests and the benchmark read them).
  scales() {
    const s = this.plot?.scales;
    return s ? { xMin: s.x.min, xMax: s.x.max, yMin: s.y.min, yMax: s.y.max } : null;
  }

  destroy() {
    this.resize.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }

  // Rebuild the uPlot instance when the set of lines changes, else just give it new data.
  draw() {
    this.dirty = false;
    const signature = JSON.stringify([
      this.unit,
      this.height,
      this.series.map((s) => [s.name, s.color, Boolean(s.band)]),
    ]);
    if (!this.plot || signature !== this.signature) {
      this.plot?.destroy();
      this.signature = signature;
      this.plot = this.build();
      this.join = this.mode === 2 ? new Lines() : new Join();
    }
    const data = this.join.update(this.columns());
    const [min, max] = this.xRange();
    this.plot.batch(() => {
      this.plot.setData(data, false);
      this.plot.setScale("x", { min, max });
      // uPlot's mode 2 ranges y over every reading, not the ones in view: do it here
      if (this.mode === 2) {
        const [lo, hi] = yRange(...extent(this.series, min, max));
        this.plot.setScale("y", { min: lo, max: hi });
      }
    });
  }

  columns() {
    const columns = [];
    for (const s of this.series) {
      columns.push(s.points);
      if (s.band) columns.push(s.band.min, s.band.max);
    }
    return columns;
  }

  // Lines without bands are given to uPlot each with its own x values (its mode 2): nothing to
  // join, and uPlot walks each line's own readings, not a shared column 6x as long and mostly
  // empty (measured: the difference between the old canvas chart's redraw time and ours).
  // Bands need the shared column (uPlot fills between two series of the same x), and mode 2
  // needs at least one line.
  build() {
    const colors = themeColors();
    const unit = this.unit;
    const mode = this.series.length && !this.series.some((s) => s.band) ? 2 : 1;
    this.mode = mode;
    const fmt = (u, v) => (v === null || v === undefined ? "–" : formatNumber(v) + (unit ? ` ${unit}` : ""));
    const series = [{ label: "time", value: (u, v) => (v === null ? "–" : formatTime(v, 0)) }];
    const own = mode === 2 ? {
      facets: [{ scale: "x", auto: false, sorted: 1 }, { scale: "y", auto: false }],
      paths: uPlot.paths.linear(),
      points: { show: sparse },
    } : {};
    const bands = [];
    for (const s of this.series) {
      series.push({ label: s.name, stroke: s.color, width: 1.75, spanGaps: true, value: fmt, ...own });
      if (s.band) {
        const faint = withAlpha(s.color, 0.55);
        series.push(
          { label: `${s.name} min`, stroke: faint, width: 1, dash: [3, 3], spanGaps: true, value: fmt,
            points: { show: false } },
          { label: `${s.name} max`, stroke: faint, width: 1, dash: [3, 3], spanGaps: true, value: fmt,
            points: { show: false } },
        );
        const n = series.length - 1;
        bands.push({ series: [n, n - 1], fill: withAlpha(s.color, 0.14) });
      }
    }
    const axis = {
      stroke: colors.axis,
      grid: { stroke: colors.grid, width: 1 },
      ticks: { stroke: colors.grid, width: 1 },
      font: "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      labelFont: "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    };
    const opts = {
      width: Math.max(100, this.box.clientWidth),
      height: this.height,
      mode,
      ms: 1, // x values are epoch milliseconds; uPlot shows them in local time
      series,
      bands,
      scales: {
        x: { time: true, auto: false },
        y: { auto: mode === 1, range: (u, lo, hi) => yRange(lo, hi) },
      },
      axes: [
        { ...axis, label: "local time", labelSize: 16, size: 30,
          values: (u, splits) => splits.map((v) => tickLabel(v, u.scales.x.max - u.scales.x.min)) },
        { ...axis, label: unit || "value", labelSize: 16, size: 52,
          values: (u, splits) => splits.map((v) => formatNumber(v)) },
      ],
      // uPlot's live legend rewrites its cells on every redraw (a style recalculation each
      // frame); the readout below is written only when the cursor moves.
      legend: { show: false },
      cursor: {
        sync: this.sync ? { key: this.sync } : undefined,
        drag: { x: true, y: false, setScale: false },
        // the nearest reading of each line, not only one at exactly this time: lines of
        // different devices have their own timestamps
        dataIdx: (u, seriesIdx, closest) =>
          mode === 2 ? nearestTime(u, seriesIdx) : nearestValue(u.data[seriesIdx], closest),
        bind: {
          mousedown: (u, target, handler) => (e) => {
            if (e.shiftKey) {
              this.startPan(e);
              return null;
            }
            return handler(e);
          },
          dblclick: () => () => {
            this.userZoom(null);
            return null;
          },
        },
      },
      hooks: {
        setSelect: [
          (u) => {
            const { left, width } = u.select;
            if (width > 3) this.userZoom([u.posToVal(left, "x"), u.posToVal(left + width, "x")]);
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          },
        ],
        draw: [(u) => this.drawMarkers(u, colors)],
        setCursor: [(u) => this.readout.show(u)],
      },
    };
    this.box.replaceChildren();
    this.readout = new Readout(this.series, fmt, (t) => formatTime(t, 0));
    const empty = mode === 2 ? [null, ...this.series.map(() => [[], []])] : [[]];
    const plot = new uPlot(opts, empty, this.box);
    this.box.append(this.readout.node);
    this.readout.show(plot);
    return plot;
  }

  userZoom(range) {
    if (this.onZoom) this.onZoom(range);
    else this.setZoom(range);
  }

  startPan(e) {
    const [min, max] = this.xRange();
    const width = this.plot.over.clientWidth || 1;
    const x0 = e.clientX;
    const move = (ev) => {
      const dt = ((ev.clientX - x0) / width) * (max - min);
      this.userZoom([min - dt, max - dt]);
    };
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  // A dashed line in the alert's severity colour where an alert was raised.
  drawMarkers(u, colors) {
    const { min, max } = u.scales.x;
    const ctx = u.ctx;
    let shown = 0;
    if (!this.markers.length) {
      if (this.box.dataset.markers !== "0") this.box.dataset.markers = "0";
      return;
    }
    ctx.save();
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const m of this.markers) {
      if (m.t < min || m.t > max) continue;
      shown += 1;
      const x = Math.round(u.valToPos(m.t, "x", true));
      const color = colors.severity[m.severity] || colors.severity.info;
      const top = u.bbox.top;
      ctx.strokeStyle = color;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + u.bbox.height);
      ctx.stroke();
      const s = 5 * devicePixelRatio;
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.moveTo(x - s, top);
      ctx.lineTo(x + s, top);
      ctx.lineTo(x, top + s * 1.4);
      ctx.fill();
    }
    ctx.restore();
    if (this.box.dataset.markers !== String(shown)) this.box.dataset.markers = String(shown);
  }
}

// Points on a line only where readings are far apart (as uPlot does in its usual mode).
function sparse(u, seriesIdx) {
  const xs = u.data[seriesIdx][0];
  const { min, max } = u.scales.x;
  if (!xs.length || max <= min) return false;
  const i0 = closestIndex(xs, min);
  const i1 = closestIndex(xs, max);
  return i1 - i0 < u.bbox.width / devicePixelRatio / 8;
}

// The y range: every value drawn lies inside it, with a little room, on round numbers.
export function yRange(lo, hi) {
  if (lo === null || hi === null || !Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const room = (hi - lo) * 0.06;
  const step = niceStep((hi - lo + 2 * room) / 4);
  return [Math.floor((lo - room) / step) * step, Math.ceil((hi + room) / step) * step];
}

function niceStep(raw) {
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
}

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

// Intl formatters are costly to create (a tenth of a millisecond each, and the time axis
// formats every tick on every redraw): made once.
const FORMATS = {
  hm: new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", hour12: false }),
  hms: new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }),
  full: new Intl.DateTimeFormat([], { hour12: false, month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit" }),
};

// Time axis labels: a sliding window keeps the same ticks frame after frame, so their labels
// are remembered (by tick and the format the span picks) rather than formatted every redraw.
const tickLabels = new Map();
function tickLabel(ms, span) {
  const kind = !span ? "f" : span > 2 * 86400000 ? "d" : span <= 600000 ? "s" : "m";
  const key = kind + ms;
  let label = tickLabels.get(key);
  if (label === undefined) {
    if (tickLabels.size > 500) tickLabels.clear();
    label = formatTime(ms, span);
    tickLabels.set(key, label);
  }
  return label;
}

export function formatTime(ms, span) {
  const d = new Date(ms);
  if (!span) return FORMATS.full.format(d);
  if (span > 2 * 86400000) return `${d.getMonth() + 1}/${d.getDate()} ${FORMATS.hm.format(d)}`;
  if (span <= 600000) return FORMATS.hms.format(d);
  return FORMATS.hm.format(d);
}

export function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return Number(v.toFixed(2)).toString();
}
