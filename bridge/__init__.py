"""The telemetry bridge: CLI, composition of services, and (later) the WebSocket/HTTP front."""

__version__ = "0.1.0"
