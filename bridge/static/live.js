// The live charts: one per metric, one line per selected device. The last KEEP_MS are raw
// readings from the WebSocket (replayed on subscribe, then live); a longer window is filled
// before that from the query API in buckets (the rollups serve them), refreshed every minute.

import { TimeChart, formatNumber } from "./chart.js";
import { COLORS, KEEP_MS, markDirty, seriesKey, state } from "./state.js";
import { downloadCsv, queryAll } from "./api.js";
import { $, el, parseTime, setText, toast } from "./dom.js";

const AUTO_METRICS = 4; // metrics charted before the user picks any
// Bucket of the filled-in part per window: a few hundred points per line.
const BACKFILL_BUCKETS = [[3.6e6, "10s"], [2.16e7, "1m"], [8.64e7, "5m"]];
const backfillBucket = (span) => BACKFILL_BUCKETS.find(([s]) => span <= s)?.[1] || "5m";
let backfillGeneration = 0;

export function activeMetrics() {
  const all = new Set();
  for (const device of state.selected) {
    for (const m of state.metrics.get(device) || []) all.add(m);
  }
  if (state.chosenMetrics) for (const m of state.chosenMetrics) all.add(m);
  const sorted = [...all].sort();
  if (state.chosenMetrics === null) return [sorted, sorted.slice(0, AUTO_METRICS)];
  return [sorted, sorted.filter((m) => state.chosenMetrics.has(m))];
}

export function toggleMetric(metric) {
  const [, shown] = activeMetrics();
  const chosen = new Set(state.chosenMetrics ?? shown);
  if (chosen.has(metric)) chosen.delete(metric);
  else chosen.add(metric);
  state.chosenMetrics = chosen;
  markDirty("charts", "url");
}

export function liveRange() {
  const now = Date.now();
  return [now - state.windowMs, now];
}

export function setLiveZoom(range) {
  state.liveZoom = range;
  $("live-reset").hidden = range === null;
  for (const c of state.charts.values()) c.chart.setZoom(range);
}

// Buckets for the part of the window before the raw readings, for every selected device and
// metric (a few pages at most). A newer request makes an older answer moot.
export async function loadBackfill() {
  const generation = ++backfillGeneration;
  const span = state.windowMs;
  if (span <= KEEP_MS || !state.selected.length) {
    if (state.backfill.size) for (const c of state.charts.values()) c.chart.invalidate();
    state.backfill.clear();
    return;
  }
  const bucket = backfillBucket(span);
  const now = Date.now();
  const params = {
    device_id: state.selected.join(","),
    from: new Date(now - span).toISOString(),
    to: new Date(now).toISOString(),
    bucket,
    agg: "avg",
    limit: "10000",
  };
  try {
    const body = await queryAll(params);
    if (generation !== backfillGeneration) return;
    state.backfill.clear();
    for (const s of body.series) {
      const points = [];
      for (const [ts, v] of s.points) {
        const t = parseTime(ts);
        if (t !== null && typeof v === "number") points.push([t, v]);
      }
      state.backfill.set(seriesKey(s.device_id, s.metric), { points });
      const known = state.metrics.get(s.device_id) || new Set();
      known.add(s.metric);
      state.metrics.set(s.device_id, known);
    }
    for (const c of state.charts.values()) c.chart.invalidate(); // older readings changed
    markDirty("charts");
  } catch (err) {
    if (err.status !== 403) console.warn("backfill", err);
  }
}

// Buckets older than the first raw reading, then the raw readings.
function linePoints(device, metric) {
  const raw = state.series.get(seriesKey(device, metric))?.points || [];
  const filled = state.backfill.get(seriesKey(device, metric))?.points;
  if (!filled?.length || state.windowMs <= KEEP_MS) return raw;
  const first = raw.length ? raw[0][0] : Infinity;
  const older = filled.filter((p) => p[0] < first);
  return older.length ? older.concat(raw) : raw;
}

export function chartSeries(metric) {
  const out = [];
  state.selected.forEach((device, i) => {
    const s = state.series.get(seriesKey(device, metric));
    const points = linePoints(device, metric);
    if (points.length) out.push({ name: device, color: COLORS[i], points, unit: s?.unit || "" });
  });
  return out;
}

export function alertMarkers(devices, metric) {
  const out = [];
  for (const a of state.alerts.values()) {
    if (a.metric === metric && devices.includes(a.device_id) && a.createdMs) {
      out.push({ t: a.createdMs, severity: a.severity });
    }
  }
  return out;
}

// CSV of what the live charts show: the selected devices, the charted metrics, the window (or
// the part zoomed into). Raw readings up to KEEP_MS; a longer window in the buckets its charts
// are filled with (averages), so a day does not download every reading.
export async function liveCsv() {
  const [, metrics] = activeMetrics();
  if (!state.selected.length || !metrics.length) return;
  const [from, to] = state.liveZoom || liveRange();
  const params = {
    device_id: state.selected.join(","),
    metric: metrics.join(","),
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
  };
  if (to - from > KEEP_MS) Object.assign(params, { bucket: backfillBucket(to - from), agg: "avg" });
  const stamp = (ms) => new Date(ms).toISOString().slice(0, 19).replace(/[-:T]/g, "");
  try {
    await downloadCsv(params, `live-${stamp(from)}-${stamp(to)}.csv`);
  } catch (err) {
    toast(err.message || "The download failed.");
  }
}

export function renderCharts() {
  state.dirty.charts = false;
  const [all, shown] = activeMetrics();
  $("live-csv").disabled = !state.selected.length || !shown.length;
  $("live-empty").hidden = state.selected.length > 0 && all.length > 0;
  setText(
    "live-empty",
    state.selected.length
      ? "Waiting for readings…"
      : "Pick a device on the left to watch its readings live.",
  );
  $("metric-chips").replaceChildren(
    ...all.map((m) =>
      el(
        "button",
        {
          type: "button",
          class: `chip${shown.includes(m) ? " on" : ""}`,
          "aria-pressed": shown.includes(m) ? "true" : "false",
          dataset: { metric: m },
          onclick: () => toggleMetric(m),
        },
        m,
      ),
    ),
  );
  $("legend").replaceChildren(
    ...state.selected.map((d, i) =>
      el("span", { class: "legend-item" }, el("i", { style: { background: COLORS[i] } }), d),
    ),
  );
  const box = $("charts");
  for (const [metric, c] of state.charts) {
    if (!shown.includes(metric)) {
      c.chart.destroy();
      c.card.remove();
      state.charts.delete(metric);
    }
  }
  box.dataset.count = String(shown.length);
  for (const metric of shown) {
    let c = state.charts.get(metric);
    if (!c) {
      const plot = el("div", { class: "chart-box", "aria-label": `${metric} chart` });
      const values = el("div", { class: "chart-values" });
      const unit = el("span", { class: "unit" });
      const card = el(
        "div",
        { class: "chart-card", dataset: { metric } },
        el("div", { class: "chart-head" }, el("h3", {}, metric), unit, el("div", { class: "spacer" }), values),
        plot,
      );
      box.append(card);
      const height = shown.length === 1 ? 240 : 170;
      const chart = new TimeChart(plot, { height, onZoom: setLiveZoom, sync: "live" });
      chart.setZoom(state.liveZoom);
      c = { chart, card, values, unit };
      state.charts.set(metric, c);
    }
    box.append(c.card); // keeps the sorted order
    c.chart.height = shown.length === 1 ? 240 : 170;
    c.chart.dirty = true;
  }
}

// Once per frame for the charts with news (a reading, the clock's tick, a zoom).
export function drawLive() {
  for (const [metric, c] of state.charts) {
    if (!c.chart.dirty) continue;
    const series = chartSeries(metric);
    const unit = series.find((s) => s.unit)?.unit || "";
    c.chart.unit = unit;
    c.chart.setSeries(series);
    c.chart.setBase(liveRange());
    c.chart.setMarkers(alertMarkers(state.selected, metric));
    c.chart.draw();
    if (c.unit.textContent !== unit) c.unit.textContent = unit;
    showLatest(c.values, series);
  }
}

// The newest value of each line in the chart's head: the same spans kept, text set only when
// it changes (this runs with every redraw).
function showLatest(box, series) {
  const spans = box.children;
  const same =
    spans.length === series.length &&
    series.every((s, i) => spans[i].title === s.name && spans[i].dataset.color === s.color);
  if (!same) {
    box.replaceChildren(
      ...series.map((s) =>
        el("span", { class: "latest", style: { color: s.color }, title: s.name, dataset: { color: s.color } }),
      ),
    );
  }
  series.forEach((s, i) => {
    const text = formatNumber(s.points[s.points.length - 1][1]);
    if (spans[i].textContent !== text) spans[i].textContent = text;
  });
}
