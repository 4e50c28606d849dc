-- Commands sent to devices (PROTOCOL.md section 2, devices/{id}/commands/{command_id}).
CREATE TABLE commands (
    command_id   text PRIMARY KEY,
    device_id    text NOT NULL,
    command      text NOT NULL,
    parameters   jsonb NOT NULL DEFAULT '{}'::jsonb,
    timeout_s    double precision NOT NULL,
    status       text NOT NULL
                 CHECK (status IN ('sent', 'running', 'success', 'error', 'timeout')),
    result       jsonb,
    requested_by text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_device ON commands (device_id, created_at);
