-- Every change to the rules table notifies channel 'rules_changed' when its transaction
-- commits, whoever made it (the CLI, the WebSocket front, psql): the ingest processes LISTEN
-- on it and reload their rules at once (ingest/rules_listener.py). One notification per
-- statement; the payload names the operation and is informational only, a listener reloads
-- the whole table. PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION rules_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rules_changed', lower(TG_OP));
    RETURN NULL;
END
$$;

CREATE TRIGGER rules_notify_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rules
    FOR EACH STATEMENT EXECUTE FUNCTION rules_notify_changed();
