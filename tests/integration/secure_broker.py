"""A real mosquitto running the shipped production configuration (deploy/mosquitto/).

The files are copied with test ports and paths: the loopback listeners of the bridge's
services (the ingests' and the fronts') keep their options on free ports, the device listener
(TLS on 8883 in production) runs in plain on another free loopback port without its
certificate lines. Everything else, users per listener, ACLs, the dynamic-security plugin,
client-id binding, persistence, is the shipped text.

Users go where the configuration puts the users of their listener: the bridge's users (one per
connection, named as its client id: `telemetry-bridge broker-users`, plus ``bridge-ingest`` and
``bridge-front`` as plain peers with each listener's rights) into that listener's password
file, with the listener's one password; devices into the device listener's dynamic-security
plugin (its JSON file created with `mosquitto_ctrl dynsec init` and an admin, then each device
added through the running broker as `telemetry-bridge add-device` does), or into its password
file for a configuration that has one (one file for both when there is a single global one).
"""

from __future__ import annotations

import contextlib
import getpass
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.device_credentials import ADMIN_URL_ENV, add_device, put_device
from bridge.embedded import free_port
from bridge.identities import broker_users
from ingest import names
from tests.helpers import mosquitto_binary
from tests.integration.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy/mosquitto"
INGEST_PASSWORD, FRONT_PASSWORD = "ingest-pw", "front-pw"
# The users of each of the bridge's listeners: the units' connections (two of each), the
# defaults of a single ingest, the command-line tool, and a peer named after the listener.
INGEST_USERS = {
    "bridge-ingest",
    "telemetry-bridge-ingest",
    "telemetry-bridge-ingest-stream",
    "telemetry-bridge-ingest-scheduler",
    *broker_users("ingest", 2),
    *broker_users("scheduler"),
    *broker_users("tool"),
}
FRONT_USERS = {"bridge-front", *broker_users("front", 2), *broker_users("tool")}
BRIDGE_USERS = {
    **{user: INGEST_PASSWORD for user in INGEST_USERS},
    **{user: FRONT_PASSWORD for user in FRONT_USERS if user not in INGEST_USERS},
}
# Certificate options of the TLS device listener: the tests have no certificates.
TLS_OPTIONS = {"certfile", "keyfile", "cafile", "capath", "crlfile", "dhparamfile",
               "tls_version", "ciphers", "ciphers_tls1.3", "require_certificate"}  # fmt: skip
INGEST_ID = "telemetry-bridge-ingest-1"  # what telemetry-bridge-ingest@1.service uses
INGEST_LISTENER = "listener 1883 127.0.0.1"
FRONT_LISTENER = "listener 1885 127.0.0.1"
DEVICE_LISTENER = "listener 8883"
DYNSEC_ADMIN = ("dynsec-admin", "admin-pw")


@dataclass(frozen=True)
class Auth:
    """How a listener's users are kept: a mosquitto password file or a dynsec JSON file."""

    kind: str  # "passwd" or "dynsec"
    path: Path


def render(deploy: Path, tmp: Path, ports: dict[str, int]) -> tuple[str, dict[str, Auth]]:
    """The shipped mosquitto.conf with test ports (``ports``: ingest, front, device) and
    paths; also returns where the users of each listener go (the same file if only one)."""
    files: dict[str, Auth] = {}
    scope = "global"
    out: list[str] = []
    for line in (deploy / "mosquitto.conf").read_text().splitlines():
        stripped = line.strip()
        if stripped.split(" ", 1)[0] in TLS_OPTIONS:
            continue
        line = (
            line.replace("/etc/mosquitto/acl-", str(deploy / "acl-"))
            .replace("/etc/mosquitto/", f"{tmp}/")
            .replace("/var/lib/mosquitto/", f"{tmp}/")
        )
        if stripped == INGEST_LISTENER:
            line, scope = f"listener {ports['ingest']} 127.0.0.1", "ingest"
        elif stripped == FRONT_LISTENER:
            line, scope = f"listener {ports['front']} 127.0.0.1", "front"
        elif stripped == DEVICE_LISTENER:
            line, scope = f"listener {ports['device']} 127.0.0.1", "device"
        elif stripped.startswith("listener "):
            raise AssertionError(f"unexpected listener in the shipped config: {stripped}")
        if m := re.fullmatch(r"password_file\s+(\S+)", line.strip()):
            files[scope] = Auth("passwd", Path(m.group(1)))
        elif m := re.fullmatch(r"plugin_opt_config_file\s+(\S+)", line.strip()):
            files[scope] = Auth("dynsec", Path(m.group(1)))
        out.append(line)
    auth = {scope: files.get(scope, files.get("global")) for scope in ("ingest", "front", "device")}
    assert all(auth.values()), f"no users file in the shipped config: {files}"
    for scope in ("ingest", "front"):
        assert auth[scope].kind == "passwd", "the bridge's users are expected in a password file"
    conf = "\n".join(out) + f"\nuser {getpass.getuser()}\nlog_dest stderr\n"
    return conf, auth  # type: ignore[return-value]


@dataclass
class SecureBroker:
    tmp: Path
    users: dict[str, str]
    ingest_port: int = field(default_factory=free_port)
    front_port: int = field(default_factory=free_port)
    device_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    dynsec_file: Path | None = None  # the device listener's plugin state, if it has the plugin

    @property
    def log_path(self) -> Path:
        return self.tmp / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def bridge_port(self) -> int:
        """The ingests' listener, where the bridge's first connections go."""
        return self.ingest_port

    def port_for(self, user: str) -> int:
        if user in INGEST_USERS:
            return self.ingest_port
        return self.front_port if user in FRONT_USERS else self.device_port

    def url(self, user: str) -> str:
        """``bridge-ingest``/``bridge-front``: what the bridge's processes are given (each
        connection logs in as its client id); anyone else: that user's own login."""
        if user in ("bridge-ingest", "bridge-front"):
            port = self.ingest_port if user == "bridge-ingest" else self.front_port
            return f"mqtt://:{self.users[user]}@127.0.0.1:{port}?username=client-id"
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port_for(user)}"

    @property
    def admin_url(self) -> str:
        """The dynamic-security plugin's admin on the device listener."""
        return self.url(DYNSEC_ADMIN[0])

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(self.tmp / "mosquitto.conf")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        for port in (self.ingest_port, self.front_port, self.device_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.process.kill()
                        pytest.fail(f"mosquitto did not start: {self.log()}")
                    time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _add_passwd(passwd: Path, user: str, password: str) -> None:
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)


def _add_dynsec(broker: SecureBroker, user: str, password: str, via_cli: bool) -> None:
    if via_cli:  # the way an operator adds a device
        done = run_cli(
            "add-device", user, "--password", password, env={ADMIN_URL_ENV: broker.admin_url}
        )
        assert done.returncode == 0 and f"password: {password}" in done.stdout, done.stderr
    elif names.is_device_id(user):
        add_device(user, admin_url=broker.admin_url, password=password)
    else:  # what add-device refuses, made by hand with the same role
        put_device(broker.admin_url, user, password)


@contextlib.contextmanager
def secure_broker(
    tmp: Path,
    devices: dict[str, str],
    *,
    via_cli: Iterable[str] = (),
    deploy: Path = DEPLOY,
) -> Iterator[SecureBroker]:
    """Start mosquitto with the shipped configuration, the bridge's users and ``devices``
    (those in ``via_cli`` added with `telemetry-bridge add-device`; ids add-device refuses
    are given the same kind of role by hand)."""
    tools = ("mosquitto_passwd", "mosquitto_ctrl")
    if mosquitto_binary() is None or not all(shutil.which(tool) for tool in tools):
        pytest.skip("mosquitto (with mosquitto_passwd, mosquitto_ctrl) is needed for these tests")
    broker = SecureBroker(tmp, {**BRIDGE_USERS, **devices})
    ports = {"ingest": broker.ingest_port, "front": broker.front_port}
    conf, auth = render(deploy, tmp, {**ports, "device": broker.device_port})
    device_auth = auth["device"]
    (tmp / "mosquitto.conf").write_text(conf)
    for scope, users, password in (
        ("ingest", INGEST_USERS, INGEST_PASSWORD),
        ("front", FRONT_USERS, FRONT_PASSWORD),
    ):
        # plain "user:password" lines, hashed in place in one run (-U)
        auth[scope].path.write_text("".join(f"{user}:{password}\n" for user in sorted(users)))
        subprocess.run(["mosquitto_passwd", "-U", str(auth[scope].path)], check=True)
    if device_auth.kind == "passwd":
        device_auth.path.touch()
        for user, password in devices.items():
            _add_passwd(device_auth.path, user, password)
    else:
        device_auth.path.parent.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(device_auth.path), *DYNSEC_ADMIN],
            check=True,
            capture_output=True,
        )
        broker.users[DYNSEC_ADMIN[0]] = DYNSEC_ADMIN[1]
        broker.dynsec_file = device_auth.path
    broker.start()
    try:
        if device_auth.kind == "dynsec":
            cli = set(via_cli)
            for user, password in devices.items():
                _add_dynsec(broker, user, password, via_cli=user in cli)
        yield broker
    finally:
        broker.stop()
