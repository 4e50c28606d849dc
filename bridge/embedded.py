"""Embedded services for ``telemetry-bridge up`` when no URLs are configured.

PostgreSQL: the ``pgserver`` wheel (real PostgreSQL 16 binaries) in ``<state>/postgres``.
MQTT: ``mosquitto`` from PATH with the project's ``mosquitto.conf`` (listener and persistence
rewritten to the state directory). Data lives under the state directory and survives
restarts; ``<state>/runtime.json`` tells other commands (``simulate``) where to connect.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_FILE = "runtime.json"
PREFERRED_MQTT_PORT = 1883


class EmbeddedError(RuntimeError):
    """An embedded service could not start; the message says what to install or set."""


class MosquittoNotFound(EmbeddedError):
    """No mosquitto binary on this machine."""


def project_mosquitto_conf() -> str:
    path = PROJECT_ROOT / "mosquitto.conf"
    if not path.is_file():
        raise EmbeddedError(f"{path} is missing; run from a checkout or set BRIDGE_MQTT_URL")
    return path.read_text(encoding="utf-8")


def render_mosquitto_conf(
    template: str, *, port: int, data_dir: Path, bind: str = "127.0.0.1"
) -> str:
    """The project's conf with its first listener on ``port`` and persistence in ``data_dir``.

    pid_file and file logging are dropped (the caller owns the process and its log).
    """
    out: list[str] = []
    listener_done = False
    for line in template.splitlines():
        key = line.strip().split(" ", 1)[0]
        if key == "listener" and not listener_done:
            out.append(f"listener {port} {bind}")
            listener_done = True
        elif key == "persistence_location":
            out.append(f"persistence_location {data_dir}/")
        elif key in ("pid_file", "log_dest"):
            continue
        else:
            out.append(line)
    if not listener_done:
        out.insert(0, f"listener {port} {bind}")
    # Started as root, mosquitto would switch to the `mosquitto` user and then fail to write
    # its persistence file in our directory; run it as whoever starts it.
    out.append(f"user {getpass.getuser()}")
    out.append("log_dest stderr")
    return "\n".join(out) + "\n"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any] | None, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedError(f"process exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"nothing listens on port {port} after {deadline_s:.0f}s")


@dataclass
class MosquittoProcess:
    """A mosquitto child process with the project's configuration."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
            None,
        )
        if binary is None:
            raise MosquittoNotFound(
                "mosquitto was not found: install it (Debian/Ubuntu: apt-get install mosquitto; "
                "macOS: brew install mosquitto) or set BRIDGE_MQTT_URL to an existing broker"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = self._choose_port()
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(
            render_mosquitto_conf(project_mosquitto_conf(), port=self.port, data_dir=self.data_dir)
        )
        (self.data_dir / "port").write_text(str(self.port))
        logfile = open(self.data_dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=logfile, stderr=subprocess.STDOUT
        )
        logfile.close()
        try:
            wait_for_port(self.port, self.proc)
        except EmbeddedError as exc:
            self.stop()
            raise EmbeddedError(
                f"mosquitto did not start ({exc}); see {self.data_dir / 'mosquitto.log'}"
            ) from None
        return f"mqtt://127.0.0.1:{self.port}"

    def _choose_port(self) -> int:
        # Keep the port of the previous run so devices and `simulate` find the broker again.
        previous = self.data_dir / "port"
        if previous.is_file():
            with contextlib.suppress(ValueError):
                port = int(previous.read_text().strip())
                if port_is_free(port):
                    return port
        return PREFERRED_MQTT_PORT if port_is_free(PREFERRED_MQTT_PORT) else free_port()

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class IotcoreBroker:
    """Fallback broker from the ``iotcore`` wheel (rumqttd in a child process).

    Used only when mosquitto is not installed, so ``up`` works on a machine with nothing but
    Python. It speaks MQTT 3.1.1 on this listener and keeps sessions in memory only: queued
    messages do not survive a restart of ``up`` (the database does). Install mosquitto for
    the full reliability contract.
    """

    data_dir: Path
    port: int = 0
    _broker: Any = None

    def start(self) -> str:
        try:
            from iotcore import Broker
        except ImportError:
            raise EmbeddedError(
                "no MQTT broker available: install mosquitto (apt-get install mosquitto) or "
                "the iotcore package, or set BRIDGE_MQTT_URL"
            ) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or MosquittoProcess(self.data_dir)._choose_port()
        (self.data_dir / "port").write_text(str(self.port))
        self._broker = Broker(
            port=self.port,
            listen="127.0.0.1",
            max_payload_size=1024 * 1024,
            max_inflight_count=10_000,
        ).start()
        return f"mqtt://127.0.0.1:{self.port}?protocol=3.1.1"

    def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.stop()


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs (a pgserver dependency) warns on every start where XDG_RUNTIME_DIR
            # is unset (containers, su, ssh without a session): noise to the user, not a fault
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            try:
                import pgserver  # type: ignore[import-not-found, unused-ignore]
            except ImportError:
                raise EmbeddedError(
                    "no embedded PostgreSQL available (the pgserver wheel needs CPython "
                    "3.9-3.12): set BRIDGE_DATABASE_URL to a PostgreSQL server"
                ) from None
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            # cleanup_mode "stop": the server stops when this process exits; data stays.
            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()


@dataclass
class EmbeddedServices:
    state_dir: Path
    database_url: str | None = None
    mqtt_url: str | None = None
    _stops: list[Any] = field(default_factory=list)

    def start(self, *, need_database: bool, need_broker: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if need_database:
                pg = EmbeddedPostgres(self.state_dir / "postgres")
                log.info("starting embedded PostgreSQL in %s", pg.data_dir)
                self.database_url = pg.start()
                self._stops.append(pg.stop)
            if need_broker:
                broker: MosquittoProcess | IotcoreBroker = MosquittoProcess(
                    self.state_dir / "mosquitto"
                )
                try:
                    self.mqtt_url = broker.start()
                except MosquittoNotFound:
                    log.warning(
                        "mosquitto is not installed: using the in-process iotcore broker "
                        "(MQTT 3.1.1, no persistence across restarts); install mosquitto for "
                        "the full reliability contract"
                    )
                    broker = IotcoreBroker(self.state_dir / "iotcore")
                    self.mqtt_url = broker.start()
                log.info("started embedded %s on %s", type(broker).__name__, self.mqtt_url)
                self._stops.append(broker.stop)
        except Exception:
            self.stop()
            raise

    def write_runtime(self, database_url: str, mqtt_url: str) -> None:
        runtime = {"pid": os.getpid(), "database_url": database_url, "mqtt_url": mqtt_url}
        path = self.state_dir / RUNTIME_FILE
        path.write_text(json.dumps(runtime, indent=2))
        path.chmod(0o600)

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / RUNTIME_FILE).unlink()
        while self._stops:
            self._stops.pop()()


def read_runtime(state_dir: Path) -> dict[str, Any] | None:
    """What a running ``up`` published, if its process is still alive."""
    path = state_dir / RUNTIME_FILE
    try:
        runtime = json.loads(path.read_text())
        os.kill(int(runtime["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return runtime if isinstance(runtime, dict) else None
