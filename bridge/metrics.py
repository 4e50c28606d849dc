"""Prometheus plumbing shared by every process: one registry per process, its exposition.

Each component (ingest, scheduler, front) registers a collector in the registry of the
process it runs in; ``up`` runs all three in one process, so the front's ``/metrics`` shows
them all.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import choose_encoder

from bridge.config import Settings
from bridge.front_setup import ConfigError

log = logging.getLogger(__name__)


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The registry's metrics in the format ``accept`` asks for (Prometheus text or
    OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class MetricsServer:
    """``/metrics`` of a registry on its own port, for the processes without a front.

    prometheus_client's own threaded HTTP server: a scrape is answered from its thread, so a
    busy ingest's event loop never delays it and it adds no work to the loop; the collectors
    read plain numbers and copy what they iterate, which is safe from another thread.
    """

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(
                f"BRIDGE_METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(registry: CollectorRegistry, settings: Settings) -> MetricsServer | None:
    """A :class:`MetricsServer` when BRIDGE_METRICS_PORT is set, else None."""
    if settings.metrics_port is None:
        return None
    return MetricsServer(registry, settings.metrics_host, settings.metrics_port)
