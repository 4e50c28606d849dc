-- Devices seen by the bridge. Ids follow PROTOCOL.md section 1; the CHECK is a second line of
-- defence behind the ingest's own validation.
CREATE TABLE devices (
    device_id  text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz,
    status     text NOT NULL DEFAULT 'unknown'
               CHECK (status IN ('online', 'offline', 'warning', 'unknown')),
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Every stored reading, once. The primary key makes redelivery idempotent (ON CONFLICT DO
-- NOTHING) and must contain the partition key. Daily range partitions keep inserts on a
-- small hot index and let retention drop whole days.
CREATE TABLE readings (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, ts)
) PARTITION BY RANGE (ts);

-- The latest value per (device, metric), kept in the same transaction as the readings.
CREATE TABLE latest_values (
    device_id   text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric)
);

-- Messages that can never be stored, kept with the reason so an operator can see why.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    device_id   text,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
CREATE INDEX dead_letters_device ON dead_letters (device_id, received_at);

-- Creates the daily partitions of readings covering [first_day, last_day]; safe to call
-- concurrently and repeatedly (the ingest calls it ahead of time and for late data).
CREATE FUNCTION ensure_readings_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    created integer := 0;
    name text;
BEGIN
    WHILE day <= last_day LOOP
        name := 'readings_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                    name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL;  -- another process created it first
            END;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END;
$$;
