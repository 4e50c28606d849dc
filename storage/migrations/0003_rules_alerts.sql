-- Threshold rules (PROTOCOL.md section 5) and the alerts they raise.
CREATE TABLE rules (
    rule_id         text PRIMARY KEY CHECK (rule_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name            text NOT NULL DEFAULT '',
    metric          text NOT NULL,
    devices         text[] NOT NULL DEFAULT ARRAY['*'],
    condition       text NOT NULL
                    CHECK (condition IN ('gt', 'gte', 'lt', 'lte', 'outside', 'inside', 'no_data')),
    threshold       double precision NOT NULL,
    threshold_high  double precision,
    clear_threshold double precision,
    for_s           double precision NOT NULL DEFAULT 0,
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'high', 'critical')),
    title           text NOT NULL DEFAULT '{metric} on {device_id}',
    message         text NOT NULL DEFAULT '{metric} is {value} ({condition} {threshold})',
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    alert_id        text PRIMARY KEY,
    rule_id         text NOT NULL,
    device_id       text NOT NULL,
    metric          text NOT NULL,
    kind            text NOT NULL DEFAULT 'value' CHECK (kind IN ('value', 'no_data')),
    severity        text NOT NULL,
    title           text NOT NULL,
    message         text NOT NULL,
    state           text NOT NULL CHECK (state IN ('active', 'acknowledged', 'resolved')),
    threshold_value double precision,
    actual_value    double precision,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz
);
-- At most one open alert per (device, metric) and kind; the engine escalates that one.
CREATE UNIQUE INDEX alerts_one_open ON alerts (device_id, metric, kind) WHERE state <> 'resolved';
CREATE INDEX alerts_created ON alerts (created_at);
CREATE INDEX alerts_device ON alerts (device_id, created_at);
