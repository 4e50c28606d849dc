"""Names on the wire: device ids, metric names, severities, statuses.

This is the one place these patterns live (PROTOCOL.md section 1). Every id that reaches an
MQTT topic, a SQL statement or a log line passes through here first, so topic injection
(``+``, ``#``, ``/``, ``$SYS``, ``$share/...``) and control characters never get further.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

# fullmatch, never match/`$`: `$` also matches before a trailing newline.
DEVICE_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
METRIC_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
# A topic prefix is one or more levels of plain characters: no wildcards, no `$` start.
PREFIX_LEVEL_PATTERN: Final = r"[A-Za-z0-9_.:-]{1,64}"

_DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN, re.ASCII)
_METRIC_RE: Final = re.compile(METRIC_PATTERN, re.ASCII)
_PREFIX_LEVEL_RE: Final = re.compile(PREFIX_LEVEL_PATTERN, re.ASCII)

SEVERITIES: Final = ("info", "warning", "high", "critical")
DEVICE_STATUSES: Final = ("online", "offline", "warning", "unknown")


class InvalidName(ValueError):
    """A name that fails its pattern. The message never echoes more than a safe excerpt."""


def safe_excerpt(value: object, limit: int = 40) -> str:
    """A printable, bounded rendering of untrusted input for error messages and logs."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and _DEVICE_ID_RE.fullmatch(value) is not None


def is_metric(value: object) -> bool:
    return isinstance(value, str) and _METRIC_RE.fullmatch(value) is not None


def device_id(value: object) -> str:
    """Return ``value`` if it is a valid device id, else raise :class:`InvalidName`."""
    if is_device_id(value):
        return value  # type: ignore[return-value]
    raise InvalidName(
        f"invalid device id {safe_excerpt(value)!s}: expected 1-64 characters of "
        "A-Z a-z 0-9 _ . : - starting with a letter or digit"
    )


def metric(value: object) -> str:
    """Return ``value`` if it is a valid metric name, else raise :class:`InvalidName`."""
    if is_metric(value):
        return value  # type: ignore[return-value]
    raise InvalidName(
        f"invalid metric name {safe_excerpt(value)!s}: expected 1-64 characters of "
        "A-Z a-z 0-9 _ . - starting with a letter or underscore"
    )


def topic_prefix(value: str) -> str:
    """Validate a deployment topic prefix such as ``acme`` or ``site1/test``; '' means none."""
    if value == "":
        return value
    levels = value.split("/")
    if all(_PREFIX_LEVEL_RE.fullmatch(level) for level in levels):
        return value
    raise InvalidName(
        f"invalid topic prefix {safe_excerpt(value)!s}: levels of A-Z a-z 0-9 _ . : - "
        "separated by '/', no wildcards, no leading '$'"
    )


# MQTT identities of the bridge itself. On the production broker (deploy/mosquitto) a device's
# username is its client id, so a device named like one of the bridge's client ids or broker
# users could take over that connection's session or get that user's ACL lines.
BRIDGE_CLIENT_ID_PREFIX: Final = "telemetry-bridge-"
BRIDGE_BROKER_USERS: Final = ("bridge-ingest", "bridge-front")


def bridge_client_id(role: str) -> str:
    """A fresh client id for one of the bridge's own non-persistent broker connections."""
    return f"{BRIDGE_CLIENT_ID_PREFIX}{role}-{uuid.uuid4().hex[:10]}"


def is_reserved_for_bridge(value: str) -> bool:
    """Whether ``value`` must not be a device's broker username (compared ignoring case)."""
    folded = value.casefold()
    return folded.startswith(BRIDGE_CLIENT_ID_PREFIX.rstrip("-")) or folded in BRIDGE_BROKER_USERS
