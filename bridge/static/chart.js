// A small canvas line chart: time on x, one line per series, nice y ticks, a hover readout.
// Plain canvas on purpose: no library to vendor, and a few thousand points redraw in well
// under a frame.

const AXIS = "#8a93a6";
const GRID = "rgba(138, 147, 166, 0.14)";
const FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const PAD = { top: 12, right: 14, bottom: 24, left: 52 };

export class LineChart {
  // range(): [fromMs, toMs] of the x axis at draw time (live charts slide with the clock).
  constructor(canvas, { range, unit = "" } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.range = range;
    this.unit = unit;
    this.series = []; // [{name, color, points: [[ms, value], ...] sorted by ms}]
    this.hoverX = null;
    this.dirty = true;
    canvas.addEventListener("mousemove", (e) => {
      const rect = canvas.getBoundingClientRect();
      this.hoverX = e.clientX - rect.left;
      this.dirty = true;
    });
    canvas.addEventListener("mouseleave", () => {
      this.hoverX = null;
      this.dirty = true;
    });
  }

  setSeries(series) {
    this.series = series;
    this.dirty = true;
  }

  // Size the backing store to the element and the screen's pixel ratio (sharp on HiDPI).
  fit() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, this.canvas.clientWidth);
    const h = Math.max(50, this.canvas.clientHeight);
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
    }
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return [w, h];
  }

  draw() {
    this.dirty = false;
    const [w, h] = this.fit();
    const ctx = this.ctx;
    ctx.clearRect(0, 0, w, h);
    const [x0, x1] = this.range();
    const plotW = w - PAD.left - PAD.right;
    const plotH = h - PAD.top - PAD.bottom;
    if (plotW < 10 || plotH < 10 || x1 <= x0) return;

    let lo = Infinity;
    let hi = -Infinity;
    for (const s of this.series) {
      for (const [t, v] of s.points) {
        if (t < x0 || t > x1 || v === null) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo === Infinity) {
      lo = 0;
      hi = 1;
    }
    const ticks = niceTicks(lo, hi, Math.max(2, Math.floor(plotH / 40)));
    const yLo = ticks[0];
    const yHi = ticks[ticks.length - 1];
    const xOf = (t) => PAD.left + ((t - x0) / (x1 - x0)) * plotW;
    const yOf = (v) => PAD.top + plotH - ((v - yLo) / (yHi - yLo || 1)) * plotH;

    ctx.font = FONT;
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (const v of ticks) {
      const y = Math.round(yOf(v)) + 0.5;
      ctx.strokeStyle = GRID;
      ctx.beginPath();
      ctx.moveTo(PAD.left, y);
      ctx.lineTo(w - PAD.right, y);
      ctx.stroke();
      ctx.fillStyle = AXIS;
      ctx.fillText(formatNumber(v), PAD.left - 8, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of timeTicks(x0, x1, Math.max(2, Math.floor(plotW / 65)))) {
      const label = formatTime(t, x1 - x0);
      const half = ctx.measureText(label).width / 2;
      // keep the label inside the canvas: a tick near the edge would be cut off
      const x = Math.min(Math.max(xOf(t), half + 2), w - half - 2);
      ctx.fillStyle = AXIS;
      ctx.fillText(label, x, h - PAD.bottom + 7);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top - 2, plotW, plotH + 4);
    ctx.clip();
    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.75;
      ctx.lineJoin = "round";
      ctx.beginPath();
      let started = false;
      let visible = 0;
      for (const [t, v] of s.points) {
        if (v === null) {
          started = false; // a gap (fill=null in history) breaks the line
          continue;
        }
        const x = xOf(t);
        const y = yOf(v);
        if (started) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        started = true;
        if (t >= x0) visible += 1;
      }
      ctx.stroke();
      // Few points: mark each one, or a lone reading would be invisible.
      if (visible && visible < 40) {
        ctx.fillStyle = s.color;
        for (const [t, v] of s.points) {
          if (v === null || t < x0) continue;
          ctx.beginPath();
          ctx.arc(xOf(t), yOf(v), 2.2, 0, Math.PI * 2);
          ctx.fill();
        }
      }
    }
    ctx.restore();
    this.drawHover(ctx, xOf, yOf, x0, x1, plotH);
  }

  drawHover(ctx, xOf, yOf, x0, x1, plotH) {
    if (this.hoverX === null || this.hoverX < PAD.left) return;
    const plotW = this.canvas.clientWidth - PAD.left - PAD.right;
    const t = x0 + ((this.hoverX - PAD.left) / plotW) * (x1 - x0);
    const rows = [];
    for (const s of this.series) {
      const p = nearest(s.points, t);
      if (p && p[1] !== null) rows.push([s, p]);
    }
    if (!rows.length) return;
    const x = Math.round(this.hoverX) + 0.5;
    ctx.strokeStyle = "rgba(230, 233, 240, 0.35)";
    ctx.beginPath();
    ctx.moveTo(x, PAD.top);
    ctx.lineTo(x, PAD.top + plotH);
    ctx.stroke();
    const lines = [formatTime(rows[0][1][0], 0)].concat(
      rows.map(([s, p]) => `${s.name}  ${formatNumber(p[1])}${this.unit ? " " + this.unit : ""}`),
    );
    ctx.font = FONT;
    const boxW = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 20;
    const boxH = lines.length * 16 + 8;
    let bx = x + 10;
    if (bx + boxW > this.canvas.clientWidth - 4) bx = x - 10 - boxW;
    ctx.fillStyle = "rgba(16, 19, 26, 0.94)";
    ctx.strokeStyle = "rgba(138, 147, 166, 0.35)";
    roundRect(ctx, bx, PAD.top, boxW, boxH, 6);
    ctx.fill();
    ctx.stroke();
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    lines.forEach((line, i) => {
      ctx.fillStyle = i === 0 ? AXIS : rows[i - 1][0].color;
      ctx.fillText(line, bx + 10, PAD.top + 6 + i * 16);
    });
    for (const [s, p] of rows) {
      ctx.fillStyle = s.color;
      ctx.beginPath();
      ctx.arc(xOf(p[0]), yOf(p[1]), 3.5, 0, Math.PI * 2);
      ctx.fill();
    }
  }
}

function nearest(points, t) {
  // binary search in points sorted by time
  let lo = 0;
  let hi = points.length - 1;
  if (hi < 0) return null;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] < t) lo = mid + 1;
    else hi = mid;
  }
  const prev = points[Math.max(0, lo - 1)];
  return Math.abs(prev[0] - t) < Math.abs(points[lo][0] - t) ? prev : points[lo];
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.moveTo(x + r, y);
  ctx.arcTo(x + w, y, x + w, y + h, r);
  ctx.arcTo(x + w, y + h, x, y + h, r);
  ctx.arcTo(x, y + h, x, y, r);
  ctx.arcTo(x, y, x + w, y, r);
  ctx.closePath();
}

// Ticks at 1, 2 or 5 times a power of ten that cover [lo, hi].
export function niceTicks(lo, hi, count) {
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const start = Math.floor(lo / step) * step;
  const out = [];
  for (let v = start; v <= hi + step * 0.5 && out.length < 50; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  if (out.length < 2) out.push(out[0] + step);
  return out;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400, 172800, 604800].map((s) => s * 1000);

function timeTicks(x0, x1, count) {
  const step = TIME_STEPS.find((s) => (x1 - x0) / s <= count) || TIME_STEPS.at(-1);
  // align to the step in local time, so labels read 10:05, 10:10...
  const offset = new Date(x0).getTimezoneOffset() * 60000;
  const out = [];
  for (let t = Math.ceil((x0 - offset) / step) * step + offset; t <= x1; t += step) out.push(t);
  return out;
}

export function formatTime(ms, span) {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (span > 2 * 86400000) return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
  if (span && span <= 600000) return `${hm}:${String(d.getSeconds()).padStart(2, "0")}`;
  if (!span) {
    return d.toLocaleString([], { hour12: false, month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  return hm;
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
