-- The subscriptions each ingest holds for its mappings (ingest/mapping_loop.py), by MQTT client
-- id. An ingest's broker session is persistent: a mapping removed while the ingest was stopped
-- would keep its subscription in the session, and what arrives on it would be dead-lettered
-- as no_mapping until the session expired. At start the ingest unsubscribes from what it
-- remembers holding and no longer wants.
CREATE TABLE ingest_mapped_subscriptions (
    client_id    text NOT NULL,
    subscription text NOT NULL,
    PRIMARY KEY (client_id, subscription)
);
