// The live dashboard: start-up, connection, devices, status strip and the page's wiring. The
// wire contract is PROTOCOL.md; the connection handling (auth, reconnect, resume) lives in
// conn.js, the live charts in live.js, the history view in history.js, the alert list in
// alerts.js, the view's URL in urlstate.js.

import { Connection } from "./conn.js";
import { HELP, formatNumber } from "./chart.js";
import { $, ago, el, parseTime, setText, toast, tokenClaims } from "./dom.js";
import { getJson } from "./api.js";
import { COLORS, KEEP_MS, MAX_DEVICES, markDirty, seriesKey, state } from "./state.js";
import { WINDOWS, formatView, parseView, windowName } from "./urlstate.js";
import { activeMetrics, drawLive, loadBackfill, renderCharts, setLiveZoom } from "./live.js";
import { mergeAlert, renderAlerts } from "./alerts.js";
import { drawHistory, historyCsv, historyWindow, loadHistory, renderHistoryCharts } from "./history.js";

const TOKEN_KEY = "telemetry-bridge.token";
const MAX_POINTS = 5000; // per series, whatever the rate
const ALERTS_SINCE_MS = 24 * 3600 * 1000;

// ---------------------------------------------------------------------------- start-up
async function init() {
  bindUi();
  applyView(parseView(location.hash));
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
  state.backfill.clear();
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
    loadBackfill();
    for (const id of state.selected) loadMetricNames(id);
    if (state.history.wanted) loadHistory();
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

function upsertDevice(id, status, lastSeen, reason) {
  if (typeof id !== "string") return;
  const d = state.devices.get(id) || { id, status: "unknown", lastSeen: null, reason: "" };
  if (status) d.status = status;
  if (lastSeen && lastSeen > (d.lastSeen || 0)) d.lastSeen = lastSeen;
  if (reason) d.reason = reason;
  state.devices.set(id, d);
  markDirty("devices", "strip");
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
  }
  if (state.connState === "live") loadBackfill();
  markDirty("devices", "charts", "url");
}

// Every metric of the device, starting with the readings of the last KEEP_MS (replayed by
// the server), then live; after a reconnect it resumes from the last one seen. Its metric
// names also come from its latest values, so a quiet device has its chips too.
function subscribeDevice(id) {
  state.conn?.subscribe(`t:${id}`, {
    channel: "telemetry",
    device_id: id,
    since: new Date(Date.now() - KEEP_MS).toISOString(),
  });
  if (state.connState === "live") loadMetricNames(id);
}

async function loadMetricNames(device) {
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

// ------------------------------------------------------------------------ view <-> URL
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

function applyView(view) {
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

function writeUrl() {
  state.dirty.url = false;
  const hash = formatView(currentView());
  const target = hash === "#" ? location.pathname + location.search : hash;
  if (hash !== location.hash && !(hash === "#" && !location.hash)) history.replaceState(null, "", target);
}

function setWindow(ms) {
  state.windowMs = ms;
  $("window").value = String(ms);
  setLiveZoom(null);
  if (state.connState === "live") loadBackfill();
  for (const c of state.charts.values()) c.chart.dirty = true;
  markDirty("url");
}

// A range preset, or [from, to] shown as "Custom" with its two fields.
function setRange(range) {
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


// ------------------------------------------------------------------------------ render
function frame() {
  const d = state.dirty;
  if (d.devices) renderDevices();
  if (d.charts) renderCharts();
  if (d.alerts) renderAlerts();
  if (d.strip) renderStrip();
  if (d.historyCharts) renderHistoryCharts();
  if (d.url) writeUrl();
  drawLive();
  drawHistory();
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
  if (!state.liveZoom) for (const c of state.charts.values()) c.chart.dirty = true;
  for (const node of document.querySelectorAll("[data-ago]")) {
    const text = ago(Number(node.dataset.ago));
    if (node.textContent !== text) node.textContent = text;
  }
  updateBanner();
  state.ticks += 1;
  if (state.ticks % 15 === 0 && state.connState === "live") loadRest();
  if (state.ticks % 60 === 0 && state.connState === "live") loadBackfill();
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

// --------------------------------------------------------------------------------- UI
function showLogin(error) {
  const dialog = $("login");
  $("login-error").hidden = !error;
  if (error) $("login-error").textContent = error;
  $("login-anon").hidden = state.authRequired;
  if (!dialog.open) dialog.showModal();
  $("login-token").focus();
}

function setAlertFilter(filter) {
  state.alertFilter = filter;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.filter === filter);
  markDirty("alerts", "url");
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
  $("window").addEventListener("change", (ev) => setWindow(Number(ev.target.value)));
  $("live-reset").addEventListener("click", () => setLiveZoom(null));
  for (const node of document.querySelectorAll(".help")) node.title = HELP;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => setAlertFilter(tab.dataset.filter));
  }
  $("al-severity").addEventListener("change", (ev) => {
    state.alertSeverity = ev.target.value;
    markDirty("alerts", "url");
  });
  $("h-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const preset = $("h-range").value;
    if (preset === "custom") {
      const from = Date.parse($("h-from").value);
      const to = $("h-to").value ? Date.parse($("h-to").value) : Date.now();
      setRange([from, to]);
    } else setRange(preset);
    loadHistory().then(() => markDirty("url"));
  });
  $("h-csv").addEventListener("click", historyCsv);
  $("h-range").addEventListener("change", () => {
    const preset = $("h-range").value;
    setRange(preset === "custom" ? historyWindow() : preset);
  });
  window.addEventListener("hashchange", () => {
    applyView(parseView(location.hash));
    if (state.history.wanted) $("history").scrollIntoView({ block: "start" });
  });
  // The theme follows the system: charts take their colours when built, so rebuild them.
  matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => {
    for (const c of [...state.charts.values(), ...state.history.charts.values()]) {
      c.chart.signature = "";
      c.chart.dirty = true;
    }
  });
}

// A read-only view for tests and the curious (nothing here changes state).
function drawnScales(charts, metric) {
  const c = charts.get(metric);
  const scales = c?.chart.scales();
  if (!scales) return null;
  // every value drawn inside the x range: lines and band edges
  const values = [];
  for (const s of c.chart.series) {
    for (const pts of [s.points, s.band?.min || [], s.band?.max || []]) {
      for (const [t, v] of pts) if (v !== null && t >= scales.xMin && t <= scales.xMax) values.push(v);
    }
  }
  return { ...scales, values, markers: Number(c.chart.box.dataset.markers || 0) };
}

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
  pointTimes: (device, metric) => (state.series.get(seriesKey(device, metric))?.points || []).map((p) => p[0]),
  deviceStatus: (id) => state.devices.get(id)?.status ?? null,
  alerts: () => [...state.alerts.values()].map((a) => ({ ...a })),
  historyPointCount: () => state.history.points,
  liveScales: (metric) => drawnScales(state.charts, metric),
  historyScales: (metric) => drawnScales(state.history.charts, metric),
  liveZoom: () => state.liveZoom,
  shownMetrics: () => activeMetrics()[1],
  selected: () => [...state.selected],
  system: () => Object.fromEntries(state.system),
});

init();
