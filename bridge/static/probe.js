// window.__dashboard: a read-only view of the page for tests and the curious (nothing here
// changes state).

import { seriesKey, state } from "./state.js";
import { activeMetrics } from "./live.js";

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
