// The page's state, shared by the modules that render it (app.js, live.js, history.js).
// Rendering happens once per animation frame for the parts marked dirty.

export const MAX_DEVICES = 6;
export const KEEP_MS = 15 * 60 * 1000; // raw readings kept (and replayed) for the live charts
export const COLORS = ["#5b9dff", "#3ecf8e", "#f5b942", "#c084fc", "#ff7a90", "#45d0d8"];
export const SEVERITY_RANK = { critical: 0, high: 1, warning: 2, info: 3 };

export const state = {
  token: null,
  claims: null,
  authRequired: true,
  conn: null,
  connState: "idle",
  devices: new Map(), // id -> {id, status, lastSeen, reason}
  selected: [], // device ids, in selection order (their colour)
  metrics: new Map(), // device -> Set(metric)
  chosenMetrics: null, // null: automatic; else Set chosen by the user
  series: new Map(), // `${device}\u0000${metric}` -> {points, unit}: raw, the last KEEP_MS
  backfill: new Map(), // same keys -> {points}: bucketed averages for windows beyond KEEP_MS
  charts: new Map(), // metric -> {chart, card, values, unit}
  alerts: new Map(), // alert_id -> alert
  alertFilter: "open",
  alertSeverity: "all", // or the least severity shown
  acking: new Set(),
  system: new Map(), // component -> metrics
  frontConnections: null,
  windowMs: 300000,
  liveZoom: null, // [fromMs, toMs] while the user looks at a part of the live window
  history: null, // set by history.js
  ticks: 0,
  dirty: { devices: true, alerts: true, charts: true, strip: true, url: false },
};

export function markDirty(...parts) {
  for (const p of parts) state.dirty[p] = true;
}

export const seriesKey = (device, metric) => `${device}\u0000${metric}`;

export function hasScope(scope) {
  const scopes = String(state.claims?.scope ?? state.claims?.scopes ?? "").split(/[\s,]+/);
  return scopes.includes(scope) || scopes.includes("admin");
}

// The ids the server accepts (PROTOCOL.md §1); anything else from a URL is dropped.
export const isDeviceId = (s) => typeof s === "string" && /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/.test(s);
export const isMetric = (s) => typeof s === "string" && /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(s);
