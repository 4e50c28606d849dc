// The live dashboard: start-up, sign-in, the connection's messages, the render loop and the
// page's wiring. The wire contract is PROTOCOL.md; the connection handling (auth, reconnect,
// resume) lives in conn.js, the device list and readings in devices.js, the live charts in
// live.js, the history view in history.js, the alert list in alerts.js, the status strip in
// strip.js, the view's URL in view.js and urlstate.js, the test hook in probe.js.

import { Connection } from "./conn.js";
import { HELP } from "./chart.js";
import { $, ago, parseTime, setText, toast, tokenClaims } from "./dom.js";
import { getJson } from "./api.js";
import { KEEP_MS, markDirty, state } from "./state.js";
import { parseView } from "./urlstate.js";
import { drawLive, liveCsv, loadBackfill, renderCharts, setLiveZoom } from "./live.js";
import { mergeAlert, renderAlerts } from "./alerts.js";
import { drawHistory, historyCsv, historyWindow, loadHistory, renderHistoryCharts } from "./history.js";
import { loadMetricNames, onTelemetry, renderDevices, subscribeDevice, upsertDevice } from "./devices.js";
import { applyView, setAlertFilter, setRange, setWindow, writeUrl } from "./view.js";
import { renderStrip } from "./strip.js";
import "./probe.js";

const TOKEN_KEY = "telemetry-bridge.token";
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
  $("live-csv").addEventListener("click", liveCsv);
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

init();
