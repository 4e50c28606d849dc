"""MQTT consumer, payload validation, batching and (later) rules and device status.

Exceptions raised by this package:

- :class:`storage.names.InvalidName` (re-exported by ``ingest.names``) - a device id, metric
  or topic prefix that fails its pattern (PROTOCOL.md section 1); raised before the value
  reaches a topic, SQL or a log.
- :class:`ingest.payload.PayloadError` - a telemetry payload that can never be stored; the
  ingest turns it into a dead letter.
"""
