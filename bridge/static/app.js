// The live dashboard: state, rendering and wiring. The wire contract is PROTOCOL.md; the
// connection handling (auth, reconnect, resume) lives in conn.js, the charts in chart.js.

import { Connection } from "./conn.js";
import { LineChart, formatNumber, formatTime } from "./chart.js";
import { $, ago, el, parseTime, setText, toast, tokenClaims } from "./dom.js";

const TOKEN_KEY = "telemetry-bridge.token";
const MAX_DEVICES = 6;
const AUTO_METRICS = 4; // metrics charted before the user picks any
const KEEP_MS = 15 * 60 * 1000; // the longest live window
const MAX_POINTS = 5000; // per series, whatever the rate
const ALERTS_SINCE_MS = 24 * 3600 * 1000;
const COLORS = ["#5b9dff", "#3ecf8e", "#f5b942", "#c084fc", "#ff7a90", "#45d0d8"];
const SEVERITY_RANK = { critical: 0, high: 1, warning: 2, info: 3 };

const state = {
  token: null,
  claims: null,
  authRequired: true,
  conn: null,
  connState: "idle",
  devices: new Map(), // id -> {id, status, lastSeen, reason}
  selected: [], // device ids, in selection order (their colour)
  metrics: new Map(), // device -> Set(metric)
  chosenMetrics: null, // null: automatic; else Set chosen by the user
  series: new Map(), // `${device}\u0000${metric}` -> {points, unit}
  charts: new Map(), // metric -> {chart, card, values}
  alerts: new Map(), // alert_id -> alert
  alertFilter: "open",
  acking: new Set(),
  system: new Map(), // component -> metrics
  frontConnections: null,
  history: { points: 0, chart: null, series: [] },
  windowMs: 300000,
  ticks: 0,
  dirty: { devices: true, alerts: true, charts: true, strip: true },
};

// ---------------------------------------------------------------------------- start-up
async function init() {
  bindUi();
  state.history.chart = new LineChart($("h-canvas"), { range: () => historyRange() });
  requestAnimationFrame(frame);
  setInterval(tick, 1000);
  const status = await getJson("/status", false).catch(() => null);
  if (status?.features) state.authRequired = status.features.auth_required !== false;
  if (status) state.frontConnections = status.connections ?? null;
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) connect(saved);
  else if (!state.authRequired) connect(null);
  else showLogin();
}

function connect(token) {
  state.conn?.stop();
  state.token = token;
  state.claims = token ? tokenClaims(token) : { sub: "anonymous", scope: "admin" };
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  resetData();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const conn = new Connection({
    url: `${scheme}//${location.host}/ws`,
    token,
    onMessage: handleMessage,
    onState: connectionState,
  });
  state.conn = conn;
  conn.subscribe("devices", { channel: "devices", snapshot: true });
  // Alerts changed in the last day come as a replay (resolved ones too, for the "All" tab);
  // older alerts that are still open come from REST below.
  conn.subscribe("alerts", {
    channel: "alerts",
    since: new Date(Date.now() - ALERTS_SINCE_MS).toISOString(),
  });
  conn.subscribe("system", { channel: "system" });
  for (const device of state.selected) subscribeDevice(device);
  renderWho();
  conn.start();
}

function resetData() {
  state.devices.clear();
  state.alerts.clear();
  state.system.clear();
  state.series.clear();
  state.metrics.clear();
  markDirty("devices", "alerts", "charts", "strip");
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.conn?.stop();
  state.conn = null;
  state.token = null;
  resetData();
  renderWho();
  showLogin();
}

// -------------------------------------------------------------------------- connection
function connectionState(name, detail) {
  state.connState = name;
  const box = $("conn");
  box.dataset.state = name;
  document.body.dataset.conn = name;
  const banner = $("banner");
  if (name === "live") {
    setText("conn-text", "Live");
    banner.hidden = true;
    loadRest();
  } else if (name === "connecting") {
    setText("conn-text", detail.attempt ? "Reconnecting…" : "Connecting…");
  } else if (name === "reconnecting") {
    setText("conn-text", "Disconnected");
    banner.hidden = false;
    updateBanner();
  } else if (name === "auth_failed") {
    setText("conn-text", "Signed out");
    banner.hidden = true;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(detail.message || "The token was refused.");
  } else if (name === "stopped") {
    setText("conn-text", "Not connected");
    banner.hidden = true;
  }
}

function updateBanner() {
  if (state.connState !== "reconnecting" || !state.conn) return;
  const secs = Math.max(0, Math.ceil((state.conn.retryAt - Date.now()) / 1000));
  setText(
    "banner-text",
    `Connection to the bridge lost. Reconnecting in ${secs} s; live data resumes where it stopped.`,
  );
}

// Device list (with last_seen for every device) and alerts still open from before the
// replay window. Called after every (re)connect; the device list also every 15 s.
async function loadRest() {
  try {
    const body = await getJson("/api/v1/devices");
    for (const d of body.devices || []) {
      upsertDevice(d.device_id, d.status, parseTime(d.last_seen), d.status_reason);
    }
  } catch (err) {
    if (err.status !== 403) console.warn("devices", err);
  }
  try {
    const body = await getJson("/api/v1/alerts?state=open");
    for (const a of body.alerts || []) mergeAlert(a);
  } catch (err) {
    if (err.status !== 403) console.warn("alerts", err);
  }
}

async function getJson(path, withToken = true) {
  const headers = { Accept: "application/json" };
  if (withToken && state.token) headers.Authorization = `Bearer ${state.token}`;
  const resp = await fetch(path, { headers, cache: "no-store" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.message || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// ----------------------------------------------------------------------------- messages
function handleMessage(msg) {
  switch (msg.type) {
    case "telemetry_update":
      onTelemetry(msg);
      break;
    case "device_status_update":
      upsertDevice(
        msg.device_id,
        msg.new_status,
        parseTime(msg.metadata?.last_seen),
        msg.reason,
      );
      break;
    case "alert":
      mergeAlert(msg);
      break;
    case "system_status_update":
      state.system.set(msg.component || "bridge", msg.metrics || {});
      markDirty("strip");
      break;
    case "replay_complete":
      if (msg.truncated) toast("Some updates were missed while disconnected.", "warn");
      break;
    case "warning":
      if (msg.error === "slow_consumer") toast("The dashboard fell behind; some updates were merged.", "warn");
      break;
    case "error":
      if (!String(msg.id || "").startsWith("r")) toast(msg.message || msg.error || "Server error");
      break;
    default:
      break;
  }
}

function onTelemetry(msg) {
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
    insertPoint(s.points, t, v);
    latest = Math.max(latest, t);
    const chart = state.charts.get(metric);
    if (chart) chart.chart.dirty = true;
  }
  const d = state.devices.get(device);
  if (d && latest > (d.lastSeen || 0)) {
    d.lastSeen = latest;
    markDirty("devices");
  }
}

// Points arrive in receive order; a device sending its own older timestamps must not
// scramble the line, so insert in time order (the common case is a push at the end).
function insertPoint(points, t, v) {
  if (!points.length || points[points.length - 1][0] <= t) points.push([t, v]);
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
}

function upsertDevice(id, status, lastSeen, reason) {
  if (typeof id !== "string") return;
  const d = state.devices.get(id) || { id, status: "unknown", lastSeen: null, reason: "" };
  if (status) d.status = status;
  if (lastSeen && lastSeen > (d.lastSeen || 0)) d.lastSeen = lastSeen;
  if (reason) d.reason = reason;
  state.devices.set(id, d);
  markDirty("devices", "strip");
  if (!$("h-device").value) markDirty("historyOptions");
}

// REST rows and live events describe the same alert; the newest updated_at wins.
function mergeAlert(a) {
  if (!a || typeof a.alert_id !== "string") return;
  const old = state.alerts.get(a.alert_id);
  const updated = parseTime(a.updated_at) || 0;
  if (old && (old.updatedMs || 0) > updated) return;
  state.alerts.set(a.alert_id, {
    alert_id: a.alert_id,
    device_id: a.device_id,
    metric: a.metric,
    severity: a.severity,
    title: a.title,
    message: a.message,
    state: a.state,
    threshold: a.metadata?.threshold_value ?? a.threshold_value ?? null,
    actual: a.metadata?.actual_value ?? a.actual_value ?? null,
    createdMs: parseTime(a.created_at),
    updatedMs: updated,
    acknowledgedBy: a.acknowledged_by ?? old?.acknowledgedBy ?? null,
  });
  markDirty("alerts", "strip");
}

async function acknowledge(alertId) {
  state.acking.add(alertId);
  markDirty("alerts");
  try {
    const reply = await state.conn.request({ type: "ack_alert", alert_id: alertId });
    if (reply.alert) mergeAlert(reply.alert);
  } catch (err) {
    toast(err.message || "Could not acknowledge the alert.");
  } finally {
    state.acking.delete(alertId);
    markDirty("alerts");
  }
}

// --------------------------------------------------------------------- device selection
function toggleDevice(id) {
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
    if (!$("h-device").value || !state.devices.has($("h-device").value)) {
      $("h-device").value = id;
    }
  }
  markDirty("devices", "charts", "historyOptions");
}

// Every metric of the device, starting with the readings of the last KEEP_MS (replayed by
// the server), then live; after a reconnect it resumes from the last one seen.
function subscribeDevice(id) {
  state.conn?.subscribe(`t:${id}`, {
    channel: "telemetry",
    device_id: id,
    since: new Date(Date.now() - KEEP_MS).toISOString(),
  });
}

function activeMetrics() {
  const all = new Set();
  for (const device of state.selected) {
    for (const m of state.metrics.get(device) || []) all.add(m);
  }
  const sorted = [...all].sort();
  if (state.chosenMetrics === null) return [sorted, sorted.slice(0, AUTO_METRICS)];
  return [sorted, sorted.filter((m) => state.chosenMetrics.has(m))];
}

function toggleMetric(metric) {
  const [, shown] = activeMetrics();
  const chosen = new Set(state.chosenMetrics ?? shown);
  if (chosen.has(metric)) chosen.delete(metric);
  else chosen.add(metric);
  state.chosenMetrics = chosen;
  markDirty("charts", "historyOptions");
}

// ------------------------------------------------------------------------------ render
function markDirty(...parts) {
  for (const p of parts) state.dirty[p] = true;
}

function frame() {
  const d = state.dirty;
  if (d.devices) renderDevices();
  if (d.charts) renderCharts();
  if (d.alerts) renderAlerts();
  if (d.strip) renderStrip();
  if (d.historyOptions) renderHistoryOptions();
  for (const [metric, c] of state.charts) {
    if (c.chart.dirty) {
      c.chart.setSeries(chartSeries(metric));
      c.chart.draw();
      renderChartValues(metric, c);
    }
  }
  if (state.history.chart.dirty) state.history.chart.draw();
  requestAnimationFrame(frame);
}

// Once a second: live charts slide, "x s ago" ages, old points go.
function tick() {
  const cut = Date.now() - KEEP_MS;
  for (const s of state.series.values()) {
    let n = 0;
    while (n < s.points.length && s.points[n][0] < cut) n += 1;
    if (n) s.points.splice(0, n);
  }
  for (const c of state.charts.values()) c.chart.dirty = true;
  for (const node of document.querySelectorAll("[data-ago]")) {
    const text = ago(Number(node.dataset.ago));
    if (node.textContent !== text) node.textContent = text;
  }
  updateBanner();
  state.ticks += 1;
  if (state.ticks % 15 === 0 && state.connState === "live") loadRest();
  if (state.ticks % 10 === 0) {
    getJson("/status", false)
      .then((s) => {
        state.frontConnections = s.connections ?? null;
        markDirty("strip");
      })
      .catch(() => {});
  }
}

function renderDevices() {
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

function renderCharts() {
  state.dirty.charts = false;
  const [all, shown] = activeMetrics();
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
      c.card.remove();
      state.charts.delete(metric);
    }
  }
  for (const metric of shown) {
    let c = state.charts.get(metric);
    if (!c) {
      const canvas = el("canvas", { "aria-label": `${metric} chart` });
      const values = el("div", { class: "chart-values" });
      const unit = el("span", { class: "unit" });
      const card = el(
        "div",
        { class: "chart-card", dataset: { metric } },
        el("div", { class: "chart-head" }, el("h3", {}, metric), unit, el("div", { class: "spacer" }), values),
        el("div", { class: "chart-box" }, canvas),
      );
      c = { chart: new LineChart(canvas, { range: liveRange }), card, values, unit };
      state.charts.set(metric, c);
    }
    box.append(c.card); // keeps the sorted order
    c.chart.dirty = true;
  }
  box.dataset.count = String(shown.length);
}

function liveRange() {
  const now = Date.now();
  return [now - state.windowMs, now];
}

function chartSeries(metric) {
  const out = [];
  state.selected.forEach((device, i) => {
    const s = state.series.get(`${device}\u0000${metric}`);
    if (s) out.push({ name: device, color: COLORS[i], points: s.points, unit: s.unit });
  });
  return out;
}

function renderChartValues(metric, c) {
  const series = chartSeries(metric);
  const unit = series.find((s) => s.unit)?.unit || "";
  c.chart.unit = unit;
  if (c.unit.textContent !== unit) c.unit.textContent = unit;
  c.values.replaceChildren(
    ...series
      .filter((s) => s.points.length)
      .map((s) =>
        el(
          "span",
          { class: "latest", style: { color: s.color }, title: s.name },
          formatNumber(s.points[s.points.length - 1][1]),
        ),
      ),
  );
}

function renderAlerts() {
  state.dirty.alerts = false;
  const all = [...state.alerts.values()];
  const open = all.filter((a) => a.state !== "resolved");
  setText("al-count", String(open.length));
  const shown = (state.alertFilter === "open" ? open : all).sort(
    (a, b) =>
      (a.state === "resolved") - (b.state === "resolved") ||
      (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) ||
      (b.updatedMs || 0) - (a.updatedMs || 0),
  );
  $("al-empty").hidden = shown.length > 0;
  setText("al-empty", state.alertFilter === "open" ? "No open alerts." : "No alerts in the last day.");
  const canAck = hasScope("alerts:write");
  $("al-list").replaceChildren(
    ...shown.slice(0, 200).map((a) => {
      const detail =
        a.actual !== null && a.threshold !== null
          ? `${formatNumber(a.actual)} (threshold ${formatNumber(a.threshold)})`
          : null;
      const ack =
        a.state === "active"
          ? el(
              "button",
              {
                type: "button",
                class: "btn small ack",
                disabled: !canAck || state.acking.has(a.alert_id),
                title: canAck ? "Acknowledge" : "The token lacks alerts:write",
                onclick: () => acknowledge(a.alert_id),
              },
              state.acking.has(a.alert_id) ? "Acknowledging…" : "Acknowledge",
            )
          : null;
      return el(
        "li",
        {
          class: "alert-card",
          dataset: { alertId: a.alert_id, severity: a.severity, state: a.state },
        },
        el(
          "div",
          { class: "alert-top" },
          el("span", { class: "sev" }, a.severity),
          el("span", { class: "alert-state" }, a.state),
          el("div", { class: "spacer" }),
          el("span", { class: "muted small", dataset: { ago: String(a.createdMs || 0) } }, ago(a.createdMs)),
        ),
        el("div", { class: "alert-title" }, a.title || a.metric),
        el("div", { class: "alert-where" }, `${a.device_id} · ${a.metric}`),
        a.message && a.message !== a.title ? el("div", { class: "alert-msg" }, a.message) : null,
        detail ? el("div", { class: "alert-detail" }, detail) : null,
        a.state === "acknowledged" && a.acknowledgedBy
          ? el("div", { class: "muted small" }, `Acknowledged by ${a.acknowledgedBy}`)
          : null,
        ack,
      );
    }),
  );
}

function renderStrip() {
  state.dirty.strip = false;
  const sys = [...state.system.values()];
  const sum = (k) => (sys.some((m) => typeof m[k] === "number") ? sys.reduce((a, m) => a + (m[k] || 0), 0) : null);
  const max = (k) => {
    const vals = sys.map((m) => m[k]).filter((v) => typeof v === "number");
    return vals.length ? Math.max(...vals) : null;
  };
  const rate = sum("ingest_rate");
  setText("s-rate", rate === null ? "–" : `${formatNumber(rate)}/s`);
  const lag = max("ingest_lag_ms");
  setText("s-lag", lag === null ? "–" : `${formatNumber(lag)} ms`);
  const conns = sum("active_connections") ?? state.frontConnections;
  setText("s-conns", conns === null || conns === undefined ? "–" : String(conns));
  const cpu = max("cpu_usage");
  setText("s-cpu", cpu === null ? "–" : `${formatNumber(cpu)}%`);
  const mem = max("memory_usage");
  setText("s-mem", mem === null ? "–" : `${formatNumber(mem)}%`);
  const devices = [...state.devices.values()];
  const online = devices.filter((d) => d.status === "online").length;
  setText("s-online", devices.length ? `${online} / ${devices.length}` : "–");
  const open = [...state.alerts.values()].filter((a) => a.state !== "resolved").length;
  setText("s-alerts", String(open));
  $("s-alerts").dataset.hot = open > 0 ? "true" : "false";
  setText("s-comp", sys.length ? [...state.system.keys()].join(", ") : "waiting for status…");
}

function renderWho() {
  const claims = state.claims;
  setText("who", claims ? String(claims.sub ?? "") : "");
  $("signout").hidden = !state.token;
  $("signin").hidden = Boolean(state.token) || state.authRequired;
}

function hasScope(scope) {
  const scopes = String(state.claims?.scope ?? state.claims?.scopes ?? "").split(/[\s,]+/);
  return scopes.includes(scope) || scopes.includes("admin");
}

// ----------------------------------------------------------------------------- history
function renderHistoryOptions() {
  state.dirty.historyOptions = false;
  const devSel = $("h-device");
  const current = devSel.value;
  const ids = [...state.devices.keys()].sort();
  devSel.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  devSel.value = ids.includes(current) ? current : state.selected[0] || ids[0] || "";
  const metSel = $("h-metric");
  const prev = metSel.value;
  const metrics = [...(state.metrics.get(devSel.value) || [])].sort();
  metSel.replaceChildren(...metrics.map((m) => el("option", { value: m }, m)));
  if (prev && !metrics.includes(prev)) metSel.prepend(el("option", { value: prev }, prev));
  metSel.value = prev || metrics[0] || "";
  if (!metSel.value) loadMetricNames(devSel.value);
}

// Metric names of a device that is not charted: the device endpoint lists its latest values.
async function loadMetricNames(device) {
  if (!device) return;
  try {
    const body = await getJson(`/api/v1/devices/${encodeURIComponent(device)}`);
    const names = Object.keys(body.latest || {}).sort();
    if ($("h-device").value !== device || $("h-metric").value) return;
    $("h-metric").replaceChildren(...names.map((m) => el("option", { value: m }, m)));
  } catch {
    /* no devices:read: the user can still chart the device first */
  }
}

const RANGES = { "15m": 9e5, "1h": 3.6e6, "6h": 2.16e7, "24h": 8.64e7, "7d": 6.048e8 };
const AUTO_BUCKETS = [[9e5, null], [2.16e7, "1m"], [8.64e7, "5m"], [Infinity, "1h"]];

function historyWindow() {
  const range = $("h-range").value;
  if (range === "custom") {
    const from = Date.parse($("h-from").value);
    const to = $("h-to").value ? Date.parse($("h-to").value) : Date.now();
    return [from, to];
  }
  const now = Date.now();
  return [now - RANGES[range], now];
}

function historyRange() {
  return state.history.range || historyWindow();
}

async function loadHistory(ev) {
  ev?.preventDefault();
  const device = $("h-device").value;
  const metric = $("h-metric").value;
  if (!device || !metric) {
    toast("Choose a device and a metric first.", "warn");
    return;
  }
  const [from, to] = historyWindow();
  if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
    toast("The range needs a start before its end.", "warn");
    return;
  }
  let bucket = $("h-bucket").value;
  if (bucket === "auto") bucket = AUTO_BUCKETS.find(([span]) => to - from <= span)[1];
  if (bucket === "raw") bucket = null;
  const params = new URLSearchParams({
    device_id: device,
    metric,
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    limit: "10000",
  });
  if (bucket) {
    params.set("bucket", bucket);
    params.set("agg", $("h-agg").value);
  }
  $("h-load").disabled = true;
  setText("h-summary", "Loading…");
  try {
    const body = await getJson(`/api/v1/telemetry?${params}`);
    const points = [];
    for (const s of body.series || []) {
      for (const [ts, value] of s.points || []) {
        const t = parseTime(ts);
        if (t !== null) points.push([t, typeof value === "number" ? value : null]);
      }
    }
    points.sort((a, b) => a[0] - b[0]);
    state.history.points = points.length;
    state.history.range = [from, to];
    state.history.chart.setSeries([{ name: `${device} ${metric}`, color: COLORS[0], points }]);
    $("h-empty").hidden = points.length > 0;
    setText("h-empty", "No readings in this range.");
    const how = bucket ? `${$("h-agg").value} per ${bucket}` : "raw readings";
    setText(
      "h-summary",
      `${points.length} point${points.length === 1 ? "" : "s"} · ${how} · ${formatTime(from, 1)} – ${formatTime(to, 1)}` +
        (body.truncated ? " · truncated" : ""),
    );
    $("h-canvas").closest(".history").dataset.loaded = "true";
  } catch (err) {
    setText("h-summary", "");
    toast(err.message || "The query failed.");
  } finally {
    $("h-load").disabled = false;
  }
}

// --------------------------------------------------------------------------------- UI
function showLogin(error) {
  const dialog = $("login");
  $("login-error").hidden = !error;
  if (error) $("login-error").textContent = error;
  $("login-anon").hidden = state.authRequired;
  if (!dialog.open) dialog.showModal();
  $("login-token").focus();
}

function bindUi() {
  $("login-form").addEventListener("submit", (ev) => {
    const token = $("login-token").value.trim();
    if (!token || !tokenClaims(token)) {
      ev.preventDefault();
      $("login-error").textContent = "That does not look like a JWT (three dot-separated parts).";
      $("login-error").hidden = false;
      return;
    }
    $("login-token").value = "";
    connect(token);
  });
  $("login-anon").addEventListener("click", () => {
    $("login").close();
    connect(null);
  });
  // An unauthenticated dashboard is useless: Escape must not leave an empty page behind.
  $("login").addEventListener("cancel", (ev) => {
    if (!state.conn) ev.preventDefault();
  });
  $("signout").addEventListener("click", signOut);
  $("signin").addEventListener("click", () => showLogin());
  $("banner-retry").addEventListener("click", () => state.conn?.retryNow());
  $("dev-search").addEventListener("input", () => markDirty("devices"));
  $("window").addEventListener("change", (ev) => {
    state.windowMs = Number(ev.target.value);
    for (const c of state.charts.values()) c.chart.dirty = true;
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      state.alertFilter = tab.dataset.filter;
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
      markDirty("alerts");
    });
  }
  $("h-form").addEventListener("submit", loadHistory);
  $("h-device").addEventListener("change", () => {
    $("h-metric").value = "";
    $("h-metric").replaceChildren();
    markDirty("historyOptions");
  });
  $("h-range").addEventListener("change", () => {
    const custom = $("h-range").value === "custom";
    for (const node of document.querySelectorAll(".h-form .custom")) node.hidden = !custom;
    if (custom && !$("h-from").value) {
      const local = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
      $("h-from").value = local(Date.now() - 3.6e6);
      $("h-to").value = local(Date.now());
    }
  });
  window.addEventListener("resize", () => {
    for (const c of state.charts.values()) c.chart.dirty = true;
    state.history.chart.dirty = true;
  });
}

// A read-only view for tests and the curious (nothing here changes state).
window.__dashboard = Object.freeze({
  connection: () => state.connState,
  pointCount: (device, metric) => {
    let n = 0;
    for (const [key, s] of state.series) {
      const [d, m] = key.split("\u0000");
      if ((device === undefined || d === device) && (metric === undefined || m === metric)) n += s.points.length;
    }
    return n;
  },
  pointTimes: (device, metric) =>
    (state.series.get(`${device}\u0000${metric}`)?.points || []).map((p) => p[0]),
  deviceStatus: (id) => state.devices.get(id)?.status ?? null,
  alerts: () => [...state.alerts.values()].map((a) => ({ ...a })),
  historyPointCount: () => state.history.points,
  system: () => Object.fromEntries(state.system),
});

init();
