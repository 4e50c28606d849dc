"""Who each of a process's broker connections is: its MQTT client id and, with
``?username=client-id`` in BRIDGE_MQTT_URL, its username too.

MQTT lets a connection with an existing client id throw the holder of that id off and, with a
clean start, delete its session: for the ingest that is every reading the broker has queued
for it. The production broker (deploy/mosquitto) therefore makes every client's id its
username, devices and the bridge's own connections alike, so a credential can only ever hold
its own id. That needs a fixed id, and a user, per connection:

- an ingest (base ``BRIDGE_INGEST_CLIENT_ID``): ``<base>`` (its persistent session),
  ``<base>-stream`` (the validated stream) and ``<base>-scheduler`` (its system status, and
  the jobs' messages when it runs them);
- a front (base ``BRIDGE_FRONT_CLIENT_ID``; ``serve --processes N``: child i is ``<base>-i``):
  ``<base>`` (the dashboards' subscriptions) and ``<base>-pub`` (commands, acknowledgements);
- the scheduler (``BRIDGE_SCHEDULER_CLIENT_ID``): ``<base>``;
- a command-line tool (doctor, ``alerts ack``): ``telemetry-bridge-tool``.

A process's start-up check logs in as the connection it will open that has no session to
lose (``-stream``, ``-pub``, the scheduler's), never as the ingest's persistent session.

Without ``?username=client-id`` the fronts' and schedulers' ids get a random suffix unless
set, so several of them share a development broker without taking each other's ids over.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import Settings
from bridge.front_setup import ConfigError
from ingest import names
from ingest.mqtt_endpoint import MqttEndpoint

__all__ = [
    "FRONT_BASE",
    "SCHEDULER_BASE",
    "TOOL_CLIENT_ID",
    "FrontIds",
    "IngestIds",
    "bound",
    "broker_users",
    "front_ids",
    "ingest_ids",
    "scheduler_id",
    "tool_id",
]

FRONT_BASE = f"{names.BRIDGE_CLIENT_ID_PREFIX}front"
SCHEDULER_BASE = f"{names.BRIDGE_CLIENT_ID_PREFIX}scheduler"
TOOL_CLIENT_ID = f"{names.BRIDGE_CLIENT_ID_PREFIX}tool"


@dataclass(frozen=True, slots=True)
class IngestIds:
    session: str

    @property
    def stream(self) -> str:
        return f"{self.session}-stream"

    @property
    def scheduler(self) -> str:
        return f"{self.session}-scheduler"


@dataclass(frozen=True, slots=True)
class FrontIds:
    subscriptions: str

    @property
    def publisher(self) -> str:
        return f"{self.subscriptions}-pub"


def bound(settings: Settings) -> bool:
    """Whether this process's connections log in as their client ids."""
    try:
        return MqttEndpoint.from_url(settings.mqtt_url or "").username_is_client_id
    except ValueError:
        return False  # the settings' own check names the problem


def _checked(client_id: str, setting: str, settings: Settings) -> str:
    # A device's username is its client id and add-device refuses this prefix: an id without
    # it could be taken over by a device of that name.
    if bound(settings) and not client_id.startswith(names.BRIDGE_CLIENT_ID_PREFIX):
        raise ConfigError(
            f"{setting}={client_id!r}: with ?username=client-id in BRIDGE_MQTT_URL every "
            f"client id of the bridge must start with {names.BRIDGE_CLIENT_ID_PREFIX!r}"
        )
    return client_id


def ingest_ids(settings: Settings) -> IngestIds:
    return IngestIds(_checked(settings.ingest_client_id, "BRIDGE_INGEST_CLIENT_ID", settings))


def front_ids(settings: Settings) -> FrontIds:
    if settings.front_client_id:
        return FrontIds(_checked(settings.front_client_id, "BRIDGE_FRONT_CLIENT_ID", settings))
    if bound(settings):
        return FrontIds(FRONT_BASE)
    return FrontIds(names.bridge_client_id("front"))


def scheduler_id(settings: Settings) -> str:
    if settings.scheduler_client_id:
        return _checked(settings.scheduler_client_id, "BRIDGE_SCHEDULER_CLIENT_ID", settings)
    return SCHEDULER_BASE if bound(settings) else names.bridge_client_id("scheduler")


def tool_id(endpoint: MqttEndpoint, role: str) -> str:
    """A command-line tool's connection (doctor, ``alerts ack``): short-lived, no session."""
    return TOOL_CLIENT_ID if endpoint.username_is_client_id else names.bridge_client_id(role)


def broker_users(component: str, instances: int = 1) -> list[str]:
    """Every username (= client id) ``instances`` units of ``component`` log in with, named
    as deploy/systemd names them (``telemetry-bridge-ingest@1`` ... )."""
    if component == "ingest":
        out = []
        for i in range(1, instances + 1):
            ids = IngestIds(f"{names.BRIDGE_CLIENT_ID_PREFIX}ingest-{i}")
            out += [ids.session, ids.stream, ids.scheduler]
        return out
    if component == "front":
        fronts = [FrontIds(f"{FRONT_BASE}-{i}") for i in range(1, instances + 1)]
        return [n for f in fronts for n in (f.subscriptions, f.publisher)]
    if component == "scheduler":
        return [SCHEDULER_BASE]
    if component == "tool":
        return [TOOL_CLIENT_ID]
    raise ValueError(f"unknown component {component!r}: ingest, front, scheduler or tool")
