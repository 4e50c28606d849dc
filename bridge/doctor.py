"""``telemetry-bridge doctor``: check a deployment and say what is wrong and how to fix it.

Each check prints one line: ``ok``, ``warn`` (works, but not as a production deployment
should) or ``FAIL`` (something will not work), with the fix. The exit status is 1 when any
check failed. Nothing here changes the deployment, except one message published to and read
back from a ``doctor/`` topic under the deployment's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TextIO

import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bridge import identities, preflight
from bridge.app import ConfigError, jwt_verifier
from bridge.auth import AuthConfigError
from bridge.config import Settings
from ingest.mqtt import MqttEndpoint
from ingest.topics import Topics
from storage.health import applied_migrations, clock_epoch, server_version
from storage.migrate import load_migrations

MAX_CLOCK_SKEW_S = 2.0
TIMEOUT_S = 5.0


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""


def _config(settings: Settings) -> list[Check]:
    out = []
    try:
        verifier = jwt_verifier(settings)
    except (ConfigError, AuthConfigError) as exc:
        return [Check("jwt", "FAIL", str(exc), "see README, Configuration")]
    if verifier is None:
        status = "FAIL" if settings.auth_required else "warn"
        out.append(
            Check(
                "jwt",
                status,
                "no BRIDGE_JWT_SECRET or BRIDGE_JWT_PUBLIC_KEY",
                "set one (a secret of 32+ random bytes, or an RS256/ES256 public key)",
            )
        )
    elif settings.jwt_secret is not None and len(settings.jwt_secret) < 32:
        out.append(
            Check(
                "jwt",
                "warn",
                f"the HMAC secret is {len(settings.jwt_secret)} characters",
                "use 32 or more random characters (openssl rand -base64 48)",
            )
        )
    else:
        out.append(Check("jwt", "ok", f"{settings.jwt_algorithm} key configured"))
    if not settings.auth_required:
        out.append(
            Check(
                "auth",
                "warn",
                "BRIDGE_AUTH_REQUIRED=false: anyone who reaches the port gets in",
                "only for a closed development network",
            )
        )
    return out


async def _database(settings: Settings) -> list[Check]:
    if not settings.database_url:
        return [Check("database", "FAIL", "BRIDGE_DATABASE_URL is not set", "set it")]
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        problem = preflight.database_problem(exc, settings.database_url)
        return [Check("database", "FAIL", problem.detail, problem.fix)]
    try:
        version = await server_version(conn)
        out = [Check("database", "ok", f"PostgreSQL {version}")]
        known = {m.version for m in load_migrations()}
        applied = await applied_migrations(conn)
        missing = sorted(known - applied)
        if missing:
            out.append(
                Check(
                    "migrations",
                    "FAIL",
                    f"not applied: {', '.join(map(str, missing))}",
                    "run `telemetry-bridge migrate` (the ingest also applies them at start)",
                )
            )
        else:
            out.append(Check("migrations", "ok", f"{len(applied)} applied, none pending"))
        before = time.time()
        db_now = await clock_epoch(conn)
        skew = db_now - (before + time.time()) / 2
        out.append(
            Check(
                "clock",
                "ok" if abs(skew) <= MAX_CLOCK_SKEW_S else "warn",
                f"database clock is {skew:+.3f} s from this host's",
                ""
                if abs(skew) <= MAX_CLOCK_SKEW_S
                else "synchronise clocks (chrony/NTP): `since` resumes and stand-in "
                "timestamps compare times from different hosts",
            )
        )
        return out
    finally:
        await conn.close()


def _broker(settings: Settings) -> list[Check]:
    if not settings.mqtt_url:
        return [Check("broker", "FAIL", "BRIDGE_MQTT_URL is not set", "set it")]
    ep = MqttEndpoint.from_url(settings.mqtt_url)
    client_id = identities.tool_id(ep, "doctor")
    client, why, refused = preflight.mqtt_connect(ep, client_id=client_id)
    if client is None:
        problem = preflight.broker_problem(ep, why, refused=refused, client_id=client_id)
        return [Check("broker", "FAIL", problem.detail, problem.fix)]
    out = [Check("broker", "ok", f"connected to {ep.redacted()}")]
    topic = Topics(settings.mqtt_topic_prefix)._join("doctor", uuid.uuid4().hex[:12])
    received, subscribed = threading.Event(), threading.Event()
    client.on_message = lambda *_a: received.set()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(topic, qos=1)
    subscribed.wait(TIMEOUT_S)  # mosquitto 2.0 grants even a subscription its ACL denies
    client.publish(topic, orjson.dumps({"doctor": True}), qos=1)
    if received.wait(TIMEOUT_S):
        out.append(Check("round trip", "ok", "published and received a message"))
    else:
        out.append(
            Check(
                "round trip",
                "warn",
                f"a message to {topic} did not come back",
                "expected with the least-privilege users of deploy/mosquitto (ACLs deny this "
                "topic); otherwise check the broker's ACLs and BRIDGE_MQTT_TOPIC_PREFIX",
            )
        )
    client.loop_stop()
    client.disconnect()
    anonymous, _, _ = preflight.mqtt_connect(ep, anonymous=True)
    if anonymous is not None:
        anonymous.loop_stop()
        anonymous.disconnect()
        out.append(
            Check(
                "acl",
                "warn",
                "the broker accepts anonymous clients: any device can publish as any other",
                "production: deploy/mosquitto/mosquitto.conf (passwords + ACLs; devices in "
                "the dynamic-security plugin) and `telemetry-bridge add-device`",
            )
        )
    else:
        out.append(Check("acl", "ok", "anonymous clients are refused"))
    return out


def _local(host: str) -> str:
    """A listener bound to every interface is asked on the loopback one."""
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104


def _front_url(settings: Settings, path: str) -> str:
    scheme = "https" if settings.ws_tls_cert else "http"
    return f"{scheme}://{_local(settings.ws_host)}:{settings.ws_port}{path}"


def _loopback_tls() -> ssl.SSLContext:
    """For probes of our own services over loopback: a certificate names the public host, not
    127.0.0.1, so it is not verified here (the TLS settings are checked at the front's start)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _front(settings: Settings) -> list[Check]:
    url = _front_url(settings, "/health")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=_loopback_tls()) as response:  # noqa: S310
            health = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            health = orjson.loads(exc.read() or b"{}")
        except orjson.JSONDecodeError:
            health = {"status": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return [Check("front", "warn", f"{url}: {exc}", "not running on this host?")]
    status = health.get("status")
    return [
        Check(
            "front",
            "ok" if status == "healthy" else "FAIL",
            f"{url}: {status} {health.get('checks')}",
            "" if status == "healthy" else "see its log: a dependency is down",
        )
    ]


# name -> labels -> value; under `up` the front and BRIDGE_METRICS_PORT show one registry,
# so a sample read twice is kept once
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
STUCK_S = 60.0  # messages in flight and no commit for this long: the ingest is stuck


def _scrape(url: str, found: Samples) -> None:
    """Add the samples of ``url``'s Prometheus text to ``found``; OSError when it is down."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=_loopback_tls()) as response:  # noqa: S310
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value


def _metrics(settings: Settings, *, front: bool) -> list[Check]:
    """What the running processes report about themselves: the front's /metrics and the
    BRIDGE_METRICS_PORT of an ingest or scheduler on this host, whichever answer."""
    found: Samples = {}
    out = []
    if front:
        with contextlib.suppress(OSError, ValueError):  # a front that is down: see `front`
            _scrape(_front_url(settings, "/metrics"), found)
    if settings.metrics_port is not None:
        url = f"http://{_local(settings.metrics_host)}:{settings.metrics_port}/metrics"
        try:
            _scrape(url, found)
        except (OSError, ValueError) as exc:
            fix = "is an ingest, scheduler or `up` with this BRIDGE_METRICS_PORT running here?"
            out.append(Check("metrics", "warn", f"{url}: {exc}", fix))
    return out + _metric_checks(found, time.time())


def _down(name: str, what: str, values: list[float], fix: str) -> Check:
    down = sum(v == 0 for v in values)
    if down:
        return Check(name, "FAIL", f"{down} of {len(values)} {what} down (process metrics)", fix)
    return Check(name, "ok", f"{len(values)} {what} up (process metrics)")


def _metric_checks(found: Samples, now: float) -> list[Check]:
    """ok/warn/FAIL from scraped samples (pure); a check whose metrics are absent is left out."""

    def values(*names: str) -> list[float]:
        return [v for name in names for v in found.get(name, {}).values()]

    out = []
    if links := values("bridge_ingest_broker_connected", "bridge_broker_connected"):
        fix = "see the process's log; is the broker reachable from its host?"
        out.append(_down("broker-link", "broker connection(s)", links, fix))
    if ups := values("bridge_ingest_database_up", "bridge_database_up"):
        fix = "see the process's log; is PostgreSQL reachable from its host?"
        out.append(_down("database-up", "database link(s)", ups, fix))
    if inflight := values("bridge_ingest_inflight_messages"):
        waiting = int(sum(inflight))
        last = max(values("bridge_ingest_last_commit_timestamp_seconds") or [0.0])
        stuck = bool(waiting and last and now - last > STUCK_S)
        detail = f"{waiting} message(s) received, not yet acknowledged"
        if stuck:
            detail += f"; last commit {now - last:.0f} s ago"
        fix = "the ingest is not committing: see its log (database, disk, locks)"
        out.append(Check("in-flight", "warn" if stuck else "ok", detail, fix))
    if inflight:
        reasons = {
            dict(labels).get("reason", ""): v
            for labels, v in found.get("bridge_ingest_dead_letters_total", {}).items()
        }
        total = int(sum(reasons.values()))
        dropped = int(max(values("bridge_ingest_dead_letters_dropped_total") or [0.0]))
        top = ", ".join(
            f"{r}: {int(n)}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]) if n
        )
        detail = f"{total} since the ingest started" + (f" ({top})" if top else "")
        if dropped:
            detail += f"; {dropped} more over the per-device budget, not stored"
        fix = (
            "devices send what cannot be stored: the dead_letters table has each message and "
            "why (reason, detail); each device is told on devices/<id>/errors"
        )
        out.append(Check("dead-letters", "warn" if total or dropped else "ok", detail, fix))
    return out


def run(settings: Settings, out: TextIO, *, front: bool = True) -> int:
    checks = _config(settings)
    checks += asyncio.run(_database(settings))
    checks += _broker(settings)
    if front:
        checks += _front(settings)
    checks += _metrics(settings, front=front)
    width = max(len(c.name) for c in checks)
    for c in checks:
        line = f"{c.status:<5} {c.name:<{width}}  {c.detail}"
        if c.fix and c.status != "ok":
            line += f"\n{'':<{width + 8}}fix: {c.fix}"
        out.write(line + "\n")
    failed = [c for c in checks if c.status == "FAIL"]
    out.write(f"\n{len(checks)} checks, {len(failed)} failed\n")
    return 1 if failed else 0
