// The history view: the selected devices and charted metrics over a past range, one chart per
// metric, from the query API. Bucketed queries also fetch min and max per bucket, drawn as a
// band around each line. "CSV" downloads the same query's rows.

import { TimeChart, formatTime } from "./chart.js";
import { COLORS, markDirty, seriesKey, state } from "./state.js";
import { downloadCsv, queryAll } from "./api.js";
import { $, el, parseTime, setText, toast } from "./dom.js";
import { RANGES } from "./urlstate.js";
import { activeMetrics, alertMarkers } from "./live.js";

// Auto bucket: the smallest with at most a few hundred buckets over the range; raw up to 15 min.
const BUCKET_S = { "10s": 10, "30s": 30, "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400 };
const MAX_AUTO_BUCKETS = 500;

state.history = {
  range: "1h", // a RANGES key or [fromMs, toMs]
  spec: null, // the last query loaded: {devices, metrics, from, to, bucket, agg}
  data: new Map(), // metric -> [{name, color, points, band?}]
  charts: new Map(), // metric -> {chart, card}
  points: 0,
  zoom: null,
  wanted: false, // load once the connection is up (a range from the URL)
};

export function historyWindow() {
  const r = state.history.range;
  if (Array.isArray(r)) return r;
  const now = Date.now();
  return [now - RANGES[r], now];
}

export function autoBucket(from, to) {
  if (to - from <= 9e5) return null;
  const span = (to - from) / 1000;
  return Object.keys(BUCKET_S).find((b) => span / BUCKET_S[b] <= MAX_AUTO_BUCKETS) || "1d";
}

function currentSpec() {
  const [from, to] = historyWindow();
  let bucket = $("h-bucket").value;
  if (bucket === "auto") bucket = autoBucket(from, to);
  if (bucket === "raw") bucket = null;
  return {
    devices: [...state.selected],
    metrics: activeMetrics()[1],
    from,
    to,
    bucket,
    agg: bucket ? $("h-agg").value : null,
  };
}

function params(spec, agg = spec.agg) {
  const p = {
    device_id: spec.devices.join(","),
    metric: spec.metrics.join(","),
    from: new Date(spec.from).toISOString(),
    to: new Date(spec.to).toISOString(),
    limit: "10000",
  };
  if (spec.bucket) Object.assign(p, { bucket: spec.bucket, agg });
  return p;
}

function points(raw) {
  const out = [];
  for (const [ts, value] of raw || []) {
    const t = parseTime(ts);
    if (t !== null) out.push([t, typeof value === "number" ? value : null]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

export async function loadHistory(ev) {
  ev?.preventDefault();
  const spec = currentSpec();
  if (!spec.devices.length || !spec.metrics.length) {
    toast("Select devices and metrics to chart first (left and above).", "warn");
    return;
  }
  if (!Number.isFinite(spec.from) || !Number.isFinite(spec.to) || spec.from >= spec.to) {
    toast("The range needs a start before its end.", "warn");
    return;
  }
  state.history.wanted = false;
  $("h-load").disabled = true;
  setText("h-summary", "Loading…");
  try {
    // Bands: min and max per bucket, fetched alongside (they are other aggregates of the same
    // buckets, answered from the rollups like the line itself).
    const bands = spec.bucket && !["min", "max", "count", "sum"].includes(spec.agg);
    const [main, lows, highs] = await Promise.all([
      queryAll(params(spec)),
      bands ? queryAll(params(spec, "min")) : null,
      bands ? queryAll(params(spec, "max")) : null,
    ]);
    const byKey = (body) => new Map((body?.series || []).map((s) => [seriesKey(s.device_id, s.metric), s]));
    const [mins, maxs] = [byKey(lows), byKey(highs)];
    const data = new Map();
    let count = 0;
    for (const metric of spec.metrics) {
      const lines = [];
      spec.devices.forEach((device, i) => {
        const key = seriesKey(device, metric);
        const s = main.series.find((x) => x.device_id === device && x.metric === metric);
        if (!s) return;
        const line = { name: device, color: COLORS[i % COLORS.length], points: points(s.points) };
        count += line.points.length;
        if (bands && mins.has(key) && maxs.has(key)) {
          line.band = { min: points(mins.get(key).points), max: points(maxs.get(key).points) };
        }
        lines.push(line);
      });
      data.set(metric, lines);
    }
    state.history.spec = spec;
    state.history.data = data;
    state.history.points = count;
    state.history.zoom = null;
    $("h-empty").hidden = count > 0;
    setText("h-empty", "No readings in this range.");
    const how = spec.bucket ? `${spec.agg} per ${spec.bucket}${bands ? ", min–max band" : ""}` : "raw readings";
    setText(
      "h-summary",
      `${count} point${count === 1 ? "" : "s"} · ${how} · ${formatTime(spec.from, 1)} – ${formatTime(spec.to, 1)}` +
        (main.truncated ? " · truncated" : ""),
    );
    $("h-csv").disabled = false;
    $("history").dataset.loaded = "true";
    markDirty("historyCharts");
  } catch (err) {
    setText("h-summary", "");
    toast(err.message || "The query failed.");
  } finally {
    $("h-load").disabled = false;
  }
}

function setHistoryZoom(range) {
  state.history.zoom = range;
  for (const c of state.history.charts.values()) c.chart.setZoom(range);
}

export function renderHistoryCharts() {
  state.dirty.historyCharts = false;
  const h = state.history;
  const box = $("h-charts");
  for (const c of h.charts.values()) c.chart.destroy();
  h.charts.clear();
  box.replaceChildren();
  if (!h.spec) return;
  for (const [metric, lines] of h.data) {
    const plot = el("div", { class: "chart-box", "aria-label": `${metric} history chart` });
    const card = el("div", { class: "chart-card", dataset: { metric } }, el("div", { class: "chart-head" }, el("h3", {}, metric)), plot);
    box.append(card);
    const unit = state.series.get(seriesKey(h.spec.devices[0], metric))?.unit || "";
    const chart = new TimeChart(plot, { height: 220, unit, onZoom: setHistoryZoom, sync: "history" });
    chart.setSeries(lines);
    chart.setBase([h.spec.from, h.spec.to]);
    chart.setZoom(h.zoom);
    chart.setMarkers(alertMarkers(h.spec.devices, metric));
    h.charts.set(metric, { chart, card });
  }
}

export function drawHistory() {
  for (const [metric, c] of state.history.charts) {
    if (!c.chart.dirty) continue;
    c.chart.setMarkers(alertMarkers(state.history.spec.devices, metric));
    c.chart.draw();
  }
}

// CSV of what the history shows: the same devices, metrics, range, bucket and aggregate.
export async function historyCsv() {
  const spec = state.history.spec;
  if (!spec) return;
  const stamp = (ms) => new Date(ms).toISOString().slice(0, 16).replace(/[:T]/g, "");
  try {
    await downloadCsv(params(spec), `telemetry-${stamp(spec.from)}-${stamp(spec.to)}.csv`);
  } catch (err) {
    toast(err.message || "The download failed.");
  }
}
