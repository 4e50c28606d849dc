-- Device status transitions (PROTOCOL.md section 2, status/{device_id}).
ALTER TABLE devices ADD COLUMN offline_after_s integer CHECK (offline_after_s > 0);
ALTER TABLE devices ADD COLUMN status_reason text NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN status_changed_at timestamptz;

-- Every transition, for history and for dashboards that resume (issue 5).
CREATE TABLE device_status_events (
    id          bigserial PRIMARY KEY,
    device_id   text NOT NULL,
    old_status  text,
    new_status  text NOT NULL CHECK (new_status IN ('online', 'offline', 'warning', 'unknown')),
    reason      text NOT NULL DEFAULT '',
    last_seen   timestamptz,
    ts          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_status_events_device ON device_status_events (device_id, ts);
CREATE INDEX device_status_events_ts ON device_status_events (ts);
