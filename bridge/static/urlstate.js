// The view in the URL's fragment, so a view can be shared and a reload restores it:
//   #d=dev-1,dev-2&m=temperature,rssi&w=1h&r=6h&b=auto&a=avg&al=all&sev=high
// r is a preset (15m, 1h, 6h, 24h, 7d) or from-to in epoch milliseconds. Pure: no DOM.
// Anything unknown or malformed is dropped, never passed on.

import { MAX_DEVICES, isDeviceId, isMetric } from "./state.js";

export const WINDOWS = { "1m": 6e4, "5m": 3e5, "15m": 9e5, "1h": 3.6e6, "6h": 2.16e7, "24h": 8.64e7 };
export const RANGES = { "15m": 9e5, "1h": 3.6e6, "6h": 2.16e7, "24h": 8.64e7, "7d": 6.048e8 };
export const BUCKETS = ["auto", "raw", "10s", "1m", "5m", "1h"];
export const AGGS = ["avg", "min", "max", "last", "count", "sum"];
export const SEVERITIES = ["all", "critical", "high", "warning", "info"];

export function parseView(hash) {
  const p = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const list = (key, check, most) =>
    p.has(key) ? [...new Set(p.get(key).split(",").filter(check))].slice(0, most) : null;
  const view = {
    devices: list("d", isDeviceId, MAX_DEVICES),
    metrics: list("m", isMetric, 50),
    window: p.get("w") in WINDOWS ? p.get("w") : null,
    range: null,
    bucket: BUCKETS.includes(p.get("b")) ? p.get("b") : null,
    agg: AGGS.includes(p.get("a")) ? p.get("a") : null,
    alerts: ["open", "all"].includes(p.get("al")) ? p.get("al") : null,
    severity: SEVERITIES.includes(p.get("sev")) ? p.get("sev") : null,
  };
  const r = p.get("r") || "";
  const span = /^(\d{1,15})-(\d{1,15})$/.exec(r);
  if (r in RANGES) view.range = r;
  else if (span && Number(span[1]) < Number(span[2])) view.range = [Number(span[1]), Number(span[2])];
  return view;
}

export function formatView(view) {
  const p = new URLSearchParams();
  if (view.devices?.length) p.set("d", view.devices.join(","));
  if (view.metrics) p.set("m", view.metrics.join(","));
  if (view.window) p.set("w", view.window);
  if (Array.isArray(view.range)) p.set("r", `${Math.round(view.range[0])}-${Math.round(view.range[1])}`);
  else if (view.range) p.set("r", view.range);
  if (view.bucket && view.bucket !== "auto") p.set("b", view.bucket);
  if (view.agg && view.agg !== "avg") p.set("a", view.agg);
  if (view.alerts && view.alerts !== "open") p.set("al", view.alerts);
  if (view.severity && view.severity !== "all") p.set("sev", view.severity);
  // commas are safe in a fragment and far easier to read than %2C
  return "#" + p.toString().replace(/%2C/g, ",");
}

export const windowName = (ms) => Object.keys(WINDOWS).find((k) => WINDOWS[k] === ms) || "5m";
