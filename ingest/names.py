"""Names on the wire: re-exported from :mod:`storage.names`, their one home.

They live in storage so that storage (which checks query parameters and cursors) needs no
import from the ingest; ``from ingest import names`` keeps working for everything above it.
"""

from __future__ import annotations

from storage.names import (
    BRIDGE_BROKER_USERS,
    BRIDGE_CLIENT_ID_PREFIX,
    DEVICE_ID_PATTERN,
    DEVICE_STATUSES,
    METRIC_PATTERN,
    PREFIX_LEVEL_PATTERN,
    SEVERITIES,
    InvalidName,
    bridge_client_id,
    device_id,
    is_device_id,
    is_metric,
    is_reserved_for_bridge,
    metric,
    safe_excerpt,
    topic_prefix,
)

__all__ = [
    "BRIDGE_BROKER_USERS",
    "BRIDGE_CLIENT_ID_PREFIX",
    "DEVICE_ID_PATTERN",
    "DEVICE_STATUSES",
    "METRIC_PATTERN",
    "PREFIX_LEVEL_PATTERN",
    "SEVERITIES",
    "InvalidName",
    "bridge_client_id",
    "device_id",
    "is_device_id",
    "is_metric",
    "is_reserved_for_bridge",
    "metric",
    "safe_excerpt",
    "topic_prefix",
]
