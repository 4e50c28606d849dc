// The device list and the selected devices: their status rows, selection (up to MAX_DEVICES,
// each with its colour), their telemetry subscriptions and the readings that arrive for them.

import { COLORS, KEEP_MS, MAX_DEVICES, markDirty, state } from "./state.js";
import { $, ago, el, parseTime, setText, toast } from "./dom.js";
import { getJson } from "./api.js";
import { loadBackfill } from "./live.js";

const MAX_POINTS = 5000; // per series, whatever the rate

export function onTelemetry(msg) {
  const device = msg.device_id;
  if (!state.selected.includes(device)) return; // a late frame after unsubscribing
  const known = state.metrics.get(device) || new Set();
  state.metrics.set(device, known);
  let latest = 0;
  for (const [metric, reading] of Object.entries(msg.telemetry || {})) {
    const t = parseTime(reading.timestamp);
    const v = typeof reading.value === "number" ? reading.value : Number(reading.value);
    if (t === null || !Number.isFinite(v)) continue;
    if (!known.has(metric)) {
      known.add(metric);
      markDirty("charts");
    }
    const key = `${device}\u0000${metric}`;
    let s = state.series.get(key);
    if (!s) state.series.set(key, (s = { points: [], unit: reading.unit || "" }));
    if (reading.unit) s.unit = reading.unit;
    const appended = insertPoint(s.points, t, v);
    latest = Math.max(latest, t);
    const chart = state.charts.get(metric)?.chart;
    if (chart && appended) chart.dirty = true;
    else if (chart) chart.invalidate(); // not at the end: the chart joins its lines afresh
  }
  const d = state.devices.get(device);
  if (d && latest > (d.lastSeen || 0)) {
    d.lastSeen = latest;
    markDirty("devices");
  }
}

// Points arrive in receive order; a device sending its own older timestamps must not
// scramble the line, so insert in time order (the common case is a push at the end).
// Returns whether it was that push.
function insertPoint(points, t, v) {
  const appended = !points.length || points[points.length - 1][0] <= t;
  if (appended) points.push([t, v]);
  else {
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid][0] <= t) lo = mid + 1;
      else hi = mid;
    }
    points.splice(lo, 0, [t, v]);
  }
  if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
  return appended;
}

export function upsertDevice(id, status, lastSeen, reason) {
  if (typeof id !== "string") return;
  const d = state.devices.get(id) || { id, status: "unknown", lastSeen: null, reason: "" };
  if (status) d.status = status;
  if (lastSeen && lastSeen > (d.lastSeen || 0)) d.lastSeen = lastSeen;
  if (reason) d.reason = reason;
  state.devices.set(id, d);
  markDirty("devices", "strip");
}

export function toggleDevice(id) {
  const i = state.selected.indexOf(id);
  if (i >= 0) {
    state.selected.splice(i, 1);
    state.conn?.unsubscribe(`t:${id}`);
    for (const key of [...state.series.keys()]) {
      if (key.startsWith(`${id}\u0000`)) state.series.delete(key);
    }
    state.metrics.delete(id);
  } else {
    if (state.selected.length >= MAX_DEVICES) {
      toast(`At most ${MAX_DEVICES} devices at once.`, "warn");
      return;
    }
    state.selected.push(id);
    subscribeDevice(id);
  }
  if (state.connState === "live") loadBackfill();
  markDirty("devices", "charts", "url");
}

// Every metric of the device, starting with the readings of the last KEEP_MS (replayed by
// the server), then live; after a reconnect it resumes from the last one seen. Its metric
// names also come from its latest values, so a quiet device has its chips too.
export function subscribeDevice(id) {
  state.conn?.subscribe(`t:${id}`, {
    channel: "telemetry",
    device_id: id,
    since: new Date(Date.now() - KEEP_MS).toISOString(),
  });
  if (state.connState === "live") loadMetricNames(id);
}

export async function loadMetricNames(device) {
  try {
    const body = await getJson(`/api/v1/devices/${encodeURIComponent(device)}`);
    if (!state.selected.includes(device)) return;
    const known = state.metrics.get(device) || new Set();
    for (const m of Object.keys(body.latest || {})) known.add(m);
    state.metrics.set(device, known);
    markDirty("charts");
  } catch {
    /* no devices:read: the metrics appear with the readings */
  }
}

export function renderDevices() {
  state.dirty.devices = false;
  const list = $("dev-list");
  const filter = $("dev-search").value.trim().toLowerCase();
  const devices = [...state.devices.values()].sort((a, b) => a.id.localeCompare(b.id));
  setText("dev-count", String(devices.length));
  $("dev-empty").hidden = devices.length > 0;
  const items = [];
  for (const d of devices) {
    if (filter && !d.id.toLowerCase().includes(filter)) continue;
    const slot = state.selected.indexOf(d.id);
    items.push(
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: `dev${slot >= 0 ? " selected" : ""}`,
            "aria-pressed": slot >= 0 ? "true" : "false",
            dataset: { deviceId: d.id, status: d.status },
            style: slot >= 0 ? { "--swatch": COLORS[slot] } : {},
            onclick: () => toggleDevice(d.id),
            title: d.reason ? `${d.status}: ${d.reason}` : d.status,
          },
          el("span", { class: "status-dot" }),
          el("span", { class: "dev-name" }, d.id),
          el("span", { class: "dev-status" }, d.status),
          el("span", { class: "dev-seen", dataset: { ago: String(d.lastSeen || 0) } }, ago(d.lastSeen)),
        ),
      ),
    );
  }
  list.replaceChildren(...items);
}
