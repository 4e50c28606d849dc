// The status strip: ingest rate and lag, connections, devices online, open alerts, CPU and
// memory, from the system channel's latest metrics per component.

import { formatNumber } from "./chart.js";
import { $, setText } from "./dom.js";
import { state } from "./state.js";

export function renderStrip() {
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
