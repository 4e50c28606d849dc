-- What the person who acknowledged an alert wrote about it (`telemetry-bridge alerts ack
-- ID --note ...`); NULL when nothing was written.
ALTER TABLE alerts ADD COLUMN acknowledged_note text;
