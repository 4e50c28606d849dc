// HTTP calls to the bridge's REST API, with the token in the Authorization header (never in a
// URL: URLs end up in logs and history).

import { state } from "./state.js";

function headers(accept) {
  const h = { Accept: accept };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

export async function getJson(path, withToken = true) {
  const h = withToken ? headers("application/json") : { Accept: "application/json" };
  const resp = await fetch(path, { headers: h, cache: "no-store" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(body.message || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

// GET /api/v1/telemetry page by page (next_cursor) up to maxPages: {series, truncated}, the
// points of one (device, metric) gathered from every page.
export async function queryAll(params, maxPages = 8) {
  const bySeries = new Map();
  let cursor = null;
  let truncated = false;
  for (let page = 0; page < maxPages; page++) {
    const p = new URLSearchParams(params);
    if (cursor) p.set("cursor", cursor);
    const body = await getJson(`/api/v1/telemetry?${p}`);
    for (const s of body.series || []) {
      const key = `${s.device_id}\u0000${s.metric}`;
      if (!bySeries.has(key)) bySeries.set(key, { device_id: s.device_id, metric: s.metric, points: [] });
      bySeries.get(key).points.push(...(s.points || []));
    }
    cursor = body.next_cursor;
    truncated = Boolean(body.truncated);
    if (!cursor) break;
  }
  return { series: [...bySeries.values()], truncated };
}

// The same query as CSV, saved as a file: fetched with the token in a header, handed to the
// browser as a blob.
export async function downloadCsv(params, filename) {
  const p = new URLSearchParams(params);
  p.set("format", "csv");
  p.delete("limit");
  const resp = await fetch(`/api/v1/telemetry?${p}`, { headers: headers("text/csv"), cache: "no-store" });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    throw new Error(body.message || `HTTP ${resp.status}`);
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}
