"""Prometheus plumbing shared by every process: one registry per process, its exposition.

Each component (ingest, scheduler, front) registers a collector in the registry of the
process it runs in; ``up`` runs all three in one process, so the front's ``/metrics`` shows
them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The registry's metrics in the format ``accept`` asks for (Prometheus text or
    OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
