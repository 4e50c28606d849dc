// The alert list: REST rows and live events merged by alert, filtered by state and least
// severity, each with an Acknowledge button and a link to its device and metric's chart
// around the time it was raised (a view URL, see urlstate.js).

import { formatNumber } from "./chart.js";
import { $, ago, el, parseTime, setText, toast } from "./dom.js";
import { SEVERITY_RANK, hasScope, markDirty, state } from "./state.js";
import { formatView, windowName } from "./urlstate.js";

const ALERT_VIEW_MS = 30 * 60 * 1000; // an alert's link shows this much either side of it

// REST rows and live events describe the same alert; the newest updated_at wins.
export function mergeAlert(a) {
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
  for (const c of state.charts.values()) c.chart.dirty = true;
  for (const c of state.history.charts.values()) c.chart.dirty = true;
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

function alertHref(a) {
  const t = a.createdMs || Date.now();
  return formatView({
    devices: [a.device_id],
    metrics: [a.metric],
    window: windowName(state.windowMs),
    range: [t - ALERT_VIEW_MS, Math.min(Date.now(), t + ALERT_VIEW_MS)],
    alerts: state.alertFilter,
    severity: state.alertSeverity,
  });
}

export function renderAlerts() {
  state.dirty.alerts = false;
  const all = [...state.alerts.values()];
  const open = all.filter((a) => a.state !== "resolved");
  setText("al-count", String(open.length));
  const least = SEVERITY_RANK[state.alertSeverity] ?? 9;
  const shown = (state.alertFilter === "open" ? open : all)
    .filter((a) => (SEVERITY_RANK[a.severity] ?? 9) <= least)
    .sort(
    (a, b) =>
      (a.state === "resolved") - (b.state === "resolved") ||
      (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) ||
      (b.updatedMs || 0) - (a.updatedMs || 0),
  );
  $("al-empty").hidden = shown.length > 0;
  const which = state.alertSeverity === "all" ? "" : ` at ${state.alertSeverity} or above`;
  setText(
    "al-empty",
    state.alertFilter === "open" ? `No open alerts${which}.` : `No alerts${which} in the last day.`,
  );
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
        el(
          "a",
          { class: "alert-where", href: alertHref(a), title: "Chart this device and metric around the alert" },
          `${a.device_id} · ${a.metric}`,
        ),
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
