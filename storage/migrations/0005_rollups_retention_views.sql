-- Issue 5: rollups, retention by partition, resume, and views for analysts.

-- Partitions of any of the time-partitioned tables: readings and readings_1m by day,
-- readings_1h by month. Named <parent>_YYYYMMDD / <parent>_YYYYMM so retention can read the
-- range from the catalog. Safe to call concurrently and repeatedly.
CREATE FUNCTION ensure_range_partitions(parent text, unit text, first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lo date;
    hi date;
    created integer := 0;
    name text;
BEGIN
    IF unit NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'unit must be day or month, not %', unit;
    END IF;
    lo := date_trunc(unit, first_day)::date;
    WHILE lo <= last_day LOOP
        hi := (lo + ('1 ' || unit)::interval)::date;
        name := parent || '_' || to_char(lo, CASE unit WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    name, parent, lo::timestamp AT TIME ZONE 'UTC', hi::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL;  -- another process created it first
            END;
        END IF;
        lo := hi;
    END LOOP;
    RETURN created;
END;
$$;

-- Per-minute and per-hour aggregates. first/last carry their timestamps so that coarser
-- buckets can be merged from finer ones exactly.
CREATE TABLE readings_1m (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    first_ts  timestamptz NOT NULL,
    first     double precision NOT NULL,
    last_ts   timestamptz NOT NULL,
    last      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE readings_1h (
    device_id text NOT NULL,
    metric    text NOT NULL,
    bucket    timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    first_ts  timestamptz NOT NULL,
    first     double precision NOT NULL,
    last_ts   timestamptz NOT NULL,
    last      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
) PARTITION BY RANGE (bucket);

-- One row per committed ingest batch that stored new readings, written in the batch's own
-- transaction: the rollup job can never miss a batch that committed late (a slow
-- transaction, a database outage), and the query layer knows which minutes are not rolled
-- up yet (they come from raw rows).
CREATE TABLE rollup_pending (
    id          bigserial PRIMARY KEY,
    min_ts      timestamptz NOT NULL,
    max_ts      timestamptz NOT NULL,
    received_lo timestamptz NOT NULL,
    received_hi timestamptz NOT NULL
);
CREATE INDEX rollup_pending_min_ts ON rollup_pending (min_ts);
-- Readings stored before this migration are folded in by the first run.
INSERT INTO rollup_pending (min_ts, max_ts, received_lo, received_hi)
SELECT min(ts), max(ts), min(received_at), max(received_at) FROM readings HAVING count(*) > 0;

-- received_at grows with insertion order, so a BRIN index finds a batch's rows (the rollup
-- job) and the rows received since a point (resume) for almost nothing at insert time.
CREATE INDEX readings_received_at ON readings USING brin (received_at) WITH (pages_per_range = 16);

-- Resume of the alerts channel replays alerts changed since a point.
CREATE INDEX alerts_updated ON alerts (updated_at);

-- Views for analysts (psql, Grafana, pandas). Times are UTC timestamptz.
CREATE VIEW telemetry AS
    SELECT device_id, metric, ts, value, unit, received_at FROM readings;

CREATE VIEW telemetry_1m AS
    SELECT device_id, metric, bucket, count, sum, min, max, sum / count AS avg, first, last
    FROM readings_1m;

CREATE VIEW telemetry_1h AS
    SELECT device_id, metric, bucket, count, sum, min, max, sum / count AS avg, first, last
    FROM readings_1h;

CREATE VIEW device_latest AS
    SELECT d.device_id, d.status, d.last_seen, l.metric, l.value, l.unit, l.ts
    FROM devices d LEFT JOIN latest_values l USING (device_id);

CREATE VIEW open_alerts AS
    SELECT alert_id, rule_id, device_id, metric, severity, state, title, message,
           threshold_value, actual_value, created_at, updated_at
    FROM alerts WHERE state <> 'resolved';
