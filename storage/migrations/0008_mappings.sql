-- Mappings of firmware topics and payloads (ingest/mapped.py): a built-in profile switched on
-- by name (with its options), or a declarative spec. Managed by `telemetry-bridge mappings`.
-- Every change notifies 'mappings_changed' when it commits, whoever made it; each ingest
-- LISTENs and reloads its mappings (ingest/mapping_loop.py). The payload is informational.
CREATE TABLE mappings (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    profile    text,
    options    jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(options) = 'object'),
    spec       jsonb CHECK (spec IS NULL OR jsonb_typeof(spec) = 'object'),
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- exactly one of the two says how to read the messages
    CHECK ((profile IS NULL) <> (spec IS NULL))
);

CREATE FUNCTION mappings_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mappings_changed', lower(TG_OP));
    RETURN NULL;
END
$$;

CREATE TRIGGER mappings_notify_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mappings
    FOR EACH STATEMENT EXECUTE FUNCTION mappings_notify_changed();
