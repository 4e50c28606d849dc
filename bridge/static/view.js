// The page's controls <-> the view in the URL (urlstate.js parses and formats it): what a
// shared link or a reload restores, and what every change writes back.

import { $ } from "./dom.js";
import { markDirty, state } from "./state.js";
import { WINDOWS, formatView, windowName } from "./urlstate.js";
import { loadBackfill, setLiveZoom } from "./live.js";
import { loadHistory } from "./history.js";
import { toggleDevice } from "./devices.js";

function currentView() {
  return {
    devices: state.selected,
    metrics: state.chosenMetrics ? [...state.chosenMetrics].sort() : null,
    window: windowName(state.windowMs),
    range: state.history.spec || state.history.wanted ? state.history.range : null,
    bucket: $("h-bucket").value,
    agg: $("h-agg").value,
    alerts: state.alertFilter,
    severity: state.alertSeverity,
  };
}

export function applyView(view) {
  if (view.devices) {
    for (const id of [...state.selected]) if (!view.devices.includes(id)) toggleDevice(id);
    for (const id of view.devices) if (!state.selected.includes(id)) toggleDevice(id);
  }
  state.chosenMetrics = view.metrics ? new Set(view.metrics) : null;
  if (view.window) setWindow(WINDOWS[view.window]);
  if (view.bucket) $("h-bucket").value = view.bucket;
  if (view.agg) $("h-agg").value = view.agg;
  if (view.alerts) setAlertFilter(view.alerts);
  if (view.severity) {
    state.alertSeverity = view.severity;
    $("al-severity").value = view.severity;
  }
  if (view.range) {
    setRange(view.range);
    state.history.wanted = true;
    if (state.connState === "live") loadHistory();
  }
  markDirty("charts", "alerts", "devices");
}

export function writeUrl() {
  state.dirty.url = false;
  const hash = formatView(currentView());
  const target = hash === "#" ? location.pathname + location.search : hash;
  if (hash !== location.hash && !(hash === "#" && !location.hash)) history.replaceState(null, "", target);
}

export function setWindow(ms) {
  state.windowMs = ms;
  $("window").value = String(ms);
  setLiveZoom(null);
  if (state.connState === "live") loadBackfill();
  for (const c of state.charts.values()) c.chart.dirty = true;
  markDirty("url");
}

// A range preset, or [from, to] shown as "Custom" with its two fields.
export function setRange(range) {
  state.history.range = range;
  const custom = Array.isArray(range);
  $("h-range").value = custom ? "custom" : range;
  for (const node of document.querySelectorAll(".h-form .custom")) node.hidden = !custom;
  if (custom) {
    $("h-from").value = localInput(range[0]);
    $("h-to").value = localInput(range[1]);
  }
}

const localInput = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 19);

export function setAlertFilter(filter) {
  state.alertFilter = filter;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.filter === filter);
  markDirty("alerts", "url");
}
