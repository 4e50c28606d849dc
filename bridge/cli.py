"""The ``telemetry-bridge`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from bridge import (
    __version__,
    alerts_cli,
    broker_users_cli,
    db_cli,
    dead_letters_cli,
    device_credentials,
    doctor,
    mappings_cli,
    query_cli,
    rules_cli,
    supervisor,
)
from bridge.app import (
    ConfigError,
    run_ingest,
    run_migrations,
    run_scheduler,
    run_serve,
    state_secret,
)
from bridge.auth import HMAC_ALGORITHMS, SCOPES, mint
from bridge.config import Settings, load_settings
from bridge.embedded import EmbeddedError, read_runtime
from bridge.logs import redact, setup_logging
from bridge.up import run_up

DESCRIPTION = """\
telemetry-bridge: field devices publish readings over MQTT; the bridge validates them, stores
each exactly once in PostgreSQL and republishes them for dashboards.

Quick start (two terminals):
  telemetry-bridge up                              # embedded PostgreSQL + mosquitto + ingest
  telemetry-bridge simulate --devices 10 --rate 1  # a small fleet publishing readings

Configuration comes from BRIDGE_* environment variables or a TOML file (--config); for
example BRIDGE_DATABASE_URL=postgresql://user@host/db and BRIDGE_MQTT_URL=mqtt://host:1883.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="telemetry-bridge",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", type=Path, help="TOML settings file (keys without BRIDGE_)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "up",
        help="run everything; starts embedded PostgreSQL/mosquitto when no URLs are set",
        description="Run the bridge. Without BRIDGE_DATABASE_URL it starts a private "
        "PostgreSQL, without BRIDGE_MQTT_URL a private mosquitto, both keeping their data in "
        "BRIDGE_STATE_DIR (default ~/.local/state/telemetry-bridge), then applies migrations "
        "and runs the ingest until Ctrl-C.",
    )

    ing = sub.add_parser(
        "ingest",
        help="run only the ingest (needs BRIDGE_DATABASE_URL and BRIDGE_MQTT_URL)",
        description="Consume devices/+/telemetry at QoS 1 on a persistent session, store "
        "readings exactly once and acknowledge after commit.",
    )
    ing.add_argument(
        "--shared",
        action="store_true",
        default=None,
        help="use the shared subscription $share/ingest/... (run several ingest processes)",
    )
    ing.add_argument("--client-id", help="MQTT client id of the persistent session")

    srv = sub.add_parser(
        "serve",
        help="run only the WebSocket/HTTP front (needs BRIDGE_MQTT_URL and a JWT key)",
        description="Serve dashboards on BRIDGE_WS_HOST:BRIDGE_WS_PORT (default "
        "127.0.0.1:8765): WebSocket paths /ws, /ws/telemetry, /ws/alerts, /ws/devices, "
        "/ws/system and HTTP /health, /metrics, /status on the same port.",
    )
    srv.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run N front processes on the one port (SO_REUSEPORT; one core each); "
        "a process that dies is restarted",
    )

    doc = sub.add_parser(
        "doctor",
        help="check a deployment: configuration, database, migrations, clock, broker, ACLs",
        description="Connects to everything the configuration names and prints one line per "
        "check (ok / warn / FAIL) with the fix; exit status 1 when a check failed.",
    )
    doc.add_argument("--no-front", action="store_true", help="skip the front's /health")

    sub.add_parser(
        "scheduler",
        help="run only the periodic database jobs (with BRIDGE_INGEST_SCHEDULER=false ingests)",
        description="Partitions ahead of time, rollups, retention and offline detection. Each "
        "job takes a PostgreSQL advisory lock, so a second scheduler (or an ingest that also "
        "runs them) is harmless.",
    )

    tok = sub.add_parser(
        "token",
        help="mint a JWT for local use",
        description="Print a signed token. HS* uses BRIDGE_JWT_SECRET, or the secret that "
        "`up` keeps in the state directory; RS*/ES* need --private-key.",
        epilog="example: telemetry-bridge token --sub alice --scope 'telemetry:read "
        "alerts:read' --devices 'plant-a-*' --ttl 3600",
    )
    tok.add_argument("--sub", required=True, help="the subject (user or service name)")
    tok.add_argument(
        "--scope",
        default="telemetry:read alerts:read devices:read",
        help=f"space-separated scopes out of: {' '.join(SCOPES)} (default: the read scopes)",
    )
    tok.add_argument(
        "--devices", help="comma-separated device ids or *-globs the token may see (default all)"
    )
    tok.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    tok.add_argument("--private-key", type=Path, help="PEM private key for RS*/ES* algorithms")

    rules_cli.add_parser(sub)
    mappings_cli.add_parser(sub)
    query_cli.add_parser(sub)
    alerts_cli.add_parser(sub)
    dead_letters_cli.add_parser(sub)
    db_cli.add_parser(sub)
    broker_users_cli.add_parser(sub)
    device_credentials.add_parser(sub)

    sub.add_parser(
        "migrate",
        help="apply pending SQL migrations (also done on every start)",
        description="Apply pending SQL migrations to BRIDGE_DATABASE_URL (or to the embedded "
        "database of a running `up`). Safe to run any number of times.",
    )

    sim = sub.add_parser(
        "simulate",
        help="run a simulated device fleet that publishes readings",
        description="Publish realistic readings from a fleet of devices at QoS 1, waiting "
        "for PUBACKs, with progress every 2 s and a summary at the end. Connects to "
        "BRIDGE_MQTT_URL, else to the broker of a running `up`, else mqtt://127.0.0.1:1883.",
        epilog="example: telemetry-bridge simulate --devices 100 --rate 10 --metrics 5 "
        "--duration 60",
    )
    sim.add_argument("--devices", type=int, default=10, help="fleet size (default 10)")
    sim.add_argument(
        "--rate", type=float, default=1.0, help="messages per second per device (default 1)"
    )
    sim.add_argument("--metrics", type=int, default=5, help="metrics per message, 1-10 (default 5)")
    sim.add_argument("--duration", type=float, help="stop after this many seconds")
    sim.add_argument("--count", type=int, help="stop after this many messages in total")
    sim.add_argument(
        "--processes", type=int, default=1, help="publisher processes for big fleets (default 1)"
    )
    sim.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default 1)")
    sim.add_argument(
        "--id-prefix", default="sim", help="device ids are PREFIX-0000... (default sim)"
    )
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"log_level": args.log_level}
    if getattr(args, "shared", None):
        overrides["ingest_shared"] = True
    if getattr(args, "client_id", None):
        overrides["ingest_client_id"] = args.client_id
    return load_settings(args.config, **overrides)


def _token(settings: Settings, args: argparse.Namespace) -> str:
    unknown = [scope for scope in args.scope.split() if scope not in SCOPES]
    if unknown:
        raise ConfigError(
            f"--scope: unknown {'scopes' if len(unknown) > 1 else 'scope'} "
            f"{', '.join(unknown)}; the scopes are: {' '.join(SCOPES)}"
        )
    if settings.jwt_algorithm in HMAC_ALGORITHMS:
        key = settings.jwt_secret or state_secret(settings, create=False)
        if not key:
            raise ConfigError("set BRIDGE_JWT_SECRET (or run `telemetry-bridge up` once)")
    else:
        if args.private_key is None:
            raise ConfigError(f"{settings.jwt_algorithm} tokens need --private-key FILE")
        key = args.private_key.read_text()
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    return mint(
        key=key,
        algorithm=settings.jwt_algorithm,
        sub=args.sub,
        scopes=args.scope,
        devices=devices,
        ttl_s=args.ttl,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def _database_url(settings: Settings) -> str:
    url = settings.database_url or _from_running_up(settings, "database_url")
    if not url:
        raise ConfigError("set BRIDGE_DATABASE_URL (or start `telemetry-bridge up` first)")
    return url


def _mqtt_url(settings: Settings) -> str:
    """The broker: configured, else the running `up`'s, else the local default."""
    return settings.mqtt_url or _from_running_up(settings, "mqtt_url") or "mqtt://127.0.0.1:1883"


def _from_running_up(settings: Settings, key: str) -> str | None:
    runtime = read_runtime(settings.state_dir)
    return str(runtime[key]) if runtime and runtime.get(key) else None


def _config_problems(exc: Exception) -> str:
    """One line per bad setting, named as the user sets it, without echoing the value (a
    URL may hold a password)."""
    if not isinstance(exc, ValidationError):
        return f"  {exc}"
    lines = []
    for error in exc.errors():
        name = "BRIDGE_" + "_".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {name}: {message}")
    return "\n".join(lines)


def _report_unexpected(exc: Exception, settings: Settings) -> None:
    """A service that died of something unforeseen: one line, the traceback under DEBUG."""
    if settings.log_level.upper() == "DEBUG":
        logging.getLogger("bridge.cli").error("stopped by an unexpected error", exc_info=exc)
    message = f"stopped by an unexpected error: {type(exc).__name__}: {exc}"
    if settings.log_level.upper() != "DEBUG":
        message += " (BRIDGE_LOG_LEVEL=DEBUG shows the traceback)"
    _report_error(message, settings.log_format)


def _report_error(message: str, log_format: str) -> None:
    """The error that ends the command: a plain line for a person, or under the JSON format
    a record like every other line on stderr (a collector would choke on a bare line)."""
    if log_format == "json":
        logging.getLogger("bridge.cli").error("%s", message)
    else:
        print(f"telemetry-bridge: {redact(message)}", file=sys.stderr)


# The ``component`` of every log record, from what the process runs (`up` runs them all).
COMPONENTS = {"ingest": "ingest", "serve": "front", "scheduler": "scheduler", "up": "up"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    # psql's own options follow `psql`; every other command takes only its own
    args, extra = parser.parse_known_args(query_cli.join_time_options(argv))
    if extra and args.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = _settings(args)
    except (ValidationError, FileNotFoundError) as exc:
        print(f"telemetry-bridge: invalid configuration:\n{_config_problems(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, COMPONENTS.get(args.command, "cli"))
    try:
        if args.command == "up":
            run_up(settings)
        elif args.command == "ingest":
            run_ingest(settings)
        elif args.command == "serve" and args.processes < 1:
            raise ConfigError("--processes must be 1 or more")
        elif args.command == "serve" and args.processes > 1:
            if settings.ws_port == 0:
                raise ConfigError("--processes needs a fixed BRIDGE_WS_PORT (not 0)")
            return supervisor.supervise(args.processes, argv)
        elif args.command == "serve":
            run_serve(settings)
        elif args.command == "doctor":
            settings = settings.model_copy(
                update={
                    "database_url": settings.database_url
                    or _from_running_up(settings, "database_url"),
                    "mqtt_url": settings.mqtt_url or _from_running_up(settings, "mqtt_url"),
                }
            )
            return doctor.run(settings, sys.stdout, front=not args.no_front)
        elif args.command == "scheduler":
            run_scheduler(settings)
        elif args.command == "token":
            print(_token(settings, args))
        elif args.command == "rules":
            print(asyncio.run(rules_cli.run(args, _database_url(settings))))
        elif args.command == "mappings":
            return asyncio.run(
                mappings_cli.run(
                    args,
                    _database_url(settings),
                    profiles=settings.mappings,
                    file=settings.mappings_file,
                    out=sys.stdout,
                )
            )
        elif args.command == "query":
            return asyncio.run(query_cli.run(args, _database_url(settings)))
        elif args.command == "alerts":
            return asyncio.run(
                alerts_cli.run(
                    args, _database_url(settings), _mqtt_url(settings), settings.mqtt_topic_prefix
                )
            )
        elif args.command == "dead-letters":
            return asyncio.run(dead_letters_cli.run(args, _database_url(settings)))
        elif args.command == "broker-users":
            return broker_users_cli.run(args, sys.stdout)
        elif args.command in ("db-url", "psql"):
            return db_cli.run(args.command, _database_url(settings), extra)
        elif args.command == "add-device":
            password = device_credentials.add_device(
                args.device_id,
                admin_url=args.admin_url,
                password=args.password,
                topic_prefix=settings.mqtt_topic_prefix,
                cafile=args.cafile,
                profiles=args.profile,
            )
            print(f"device {args.device_id} set at the broker (in effect now)")
            print(f"password: {password}")
        elif args.command == "import-devices":
            imported, skipped = device_credentials.import_passwd(
                args.passwd, args.dynsec_file, topic_prefix=settings.mqtt_topic_prefix
            )
            print(f"imported {len(imported)} devices into {args.dynsec_file}")
            for line in skipped:
                print(f"left out {line}")
        elif args.command == "migrate":
            applied = asyncio.run(run_migrations(_database_url(settings)))
            print(f"applied {', '.join(applied)}" if applied else "database is up to date")
        elif args.command == "simulate":
            from bridge.simulate import SimulateConfig, run

            summary = run(
                SimulateConfig(
                    mqtt_url=_mqtt_url(settings),
                    devices=args.devices,
                    rate=args.rate,
                    metrics=args.metrics,
                    duration_s=args.duration,
                    count=args.count,
                    processes=args.processes,
                    qos=args.qos,
                    id_prefix=args.id_prefix,
                    topic_prefix=settings.mqtt_topic_prefix,
                )
            )
            if summary["interrupted"]:
                return 0  # Ctrl-C is how a run without --count/--duration ends
            return 1 if summary["unacked"] or summary["failed_processes"] else 0
    except (ConfigError, EmbeddedError, ValueError, OSError) as exc:
        _report_error(str(exc), settings.log_format)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.command not in COMPONENTS:
            raise
        _report_unexpected(exc, settings)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
