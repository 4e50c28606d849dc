"""Mappings: readings from the firmware people already run (Tasmota, Shelly, zigbee2mqtt,
ESPHome, Sparkplug B, InfluxDB line protocol), taken on their own topics and payloads and
handed to the ingest in the same shape as its own format's, with every guarantee of it.

The interface the ingest uses is in :mod:`ingest.mapping.api`; everything else in this package
is pure (no I/O).
"""
