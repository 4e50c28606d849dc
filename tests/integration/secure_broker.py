"""A real mosquitto running the shipped production configuration (deploy/mosquitto/).

The files are copied with test ports and paths: the loopback listener of the bridge's
services keeps its options on a free port, the device listener (TLS on 8883 in production)
runs in plain on another free loopback port without its certificate lines. Everything else,
users per listener, ACLs, client-id binding, persistence, is the shipped text.

Users go into the password file of the listener they belong to as the configuration names it
(the bridge's users into the loopback listener's, devices into the device listener's; one
file for both when the configuration has a single global one).
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

from bridge.embedded import free_port
from tests.integration.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy/mosquitto"
BRIDGE_USERS = {"bridge-ingest": "ingest-pw", "bridge-front": "front-pw"}
# Certificate options of the TLS device listener: the tests have no certificates.
TLS_OPTIONS = {"certfile", "keyfile", "cafile", "capath", "crlfile", "dhparamfile",
               "tls_version", "ciphers", "ciphers_tls1.3", "require_certificate"}  # fmt: skip
BRIDGE_LISTENER = "listener 1883 127.0.0.1"
DEVICE_LISTENER = "listener 8883"


def render(deploy: Path, tmp: Path, bridge_port: int, device_port: int) -> tuple[str, Path, Path]:
    """The shipped mosquitto.conf with test ports and paths; also returns the password files
    of the bridge's listener and of the device listener (the same file if only one)."""
    files: dict[str, str] = {}
    scope = "global"
    out: list[str] = []
    for line in (deploy / "mosquitto.conf").read_text().splitlines():
        stripped = line.strip()
        if stripped.split(" ", 1)[0] in TLS_OPTIONS:
            continue
        line = (
            line.replace("/etc/mosquitto/acl", str(deploy / "acl"))
            .replace("/etc/mosquitto/", f"{tmp}/")
            .replace("/var/lib/mosquitto/", f"{tmp}/")
        )
        if stripped == BRIDGE_LISTENER:
            line, scope = f"listener {bridge_port} 127.0.0.1", "bridge"
        elif stripped == DEVICE_LISTENER:
            line, scope = f"listener {device_port} 127.0.0.1", "device"
        elif stripped.startswith("listener "):
            raise AssertionError(f"unexpected listener in the shipped config: {stripped}")
        if m := re.fullmatch(r"password_file\s+(\S+)", line.strip()):
            files[scope] = m.group(1)
        out.append(line)
    bridge_file = files.get("bridge", files.get("global"))
    device_file = files.get("device", files.get("global"))
    assert bridge_file and device_file, f"no password_file in the shipped config: {files}"
    conf = "\n".join(out) + f"\nuser {getpass.getuser()}\nlog_dest stderr\n"
    return conf, Path(bridge_file), Path(device_file)


@dataclass
class SecureBroker:
    tmp: Path
    users: dict[str, str]
    bridge_port: int = field(default_factory=free_port)
    device_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.tmp / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def port_for(self, user: str) -> int:
        return self.bridge_port if user in BRIDGE_USERS else self.device_port

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{self.users[user]}@127.0.0.1:{self.port_for(user)}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(self.tmp / "mosquitto.conf")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        for port in (self.bridge_port, self.device_port):
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


def _add(passwd: Path, user: str, password: str, via_cli: bool) -> None:
    if via_cli:  # the way an operator adds a device
        done = run_cli("add-device", user, "--password-file", str(passwd), "--password", password)
        assert done.returncode == 0 and f"password: {password}" in done.stdout, done.stderr
    else:
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)


@contextlib.contextmanager
def secure_broker(
    tmp: Path,
    devices: dict[str, str],
    *,
    via_cli: Iterable[str] = (),
    deploy: Path = DEPLOY,
) -> Iterator[SecureBroker]:
    """Start mosquitto with the shipped configuration, the bridge's users and ``devices``
    (those in ``via_cli`` added with `telemetry-bridge add-device`)."""
    if not shutil.which("mosquitto") or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto and mosquitto_passwd are needed for the broker configuration tests")
    broker = SecureBroker(tmp, {**BRIDGE_USERS, **devices})
    conf, bridge_passwd, device_passwd = render(deploy, tmp, broker.bridge_port, broker.device_port)
    (tmp / "mosquitto.conf").write_text(conf)
    for passwd in (bridge_passwd, device_passwd):
        passwd.touch()
    cli = set(via_cli)
    for user, password in BRIDGE_USERS.items():
        _add(bridge_passwd, user, password, via_cli=False)
    for user, password in devices.items():
        _add(device_passwd, user, password, via_cli=user in cli)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
