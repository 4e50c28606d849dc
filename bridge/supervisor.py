"""``serve --processes N``: N front processes sharing one port, each restarted if it dies.

One Python process fans out on one core. Several ``serve`` processes bind the same port with
SO_REUSEPORT and the kernel spreads new connections over them; each holds only its own
clients and the broker subscriptions they need (the broker is the backplane), so nothing is
shared between them. Under systemd or compose run the processes as separate units with
``BRIDGE_WS_REUSE_PORT=true`` instead (deploy/); this supervisor is the one-command way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from bridge import identities
from ingest.mqtt_endpoint import MqttEndpoint

log = logging.getLogger("telemetry_bridge.supervisor")

RESTART_MAX_DELAY_S = 30.0
STABLE_AFTER_S = 10.0  # a child that ran this long gets the shortest restart delay again
STOP_TIMEOUT_S = 15.0


def child_argv(argv: list[str]) -> list[str]:
    """The command line of one child: the same, without ``--processes``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


class _Child:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command, self.env = command, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.delay = 1.0
        self.restart_at: float | None = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env)
        self.started, self.restart_at = time.monotonic(), None


def child_env(env: dict[str, str], index: int) -> dict[str, str]:
    """Child ``index``'s environment. The children share the WebSocket port, so a scrape of
    its /metrics reaches whichever one the kernel picks; with BRIDGE_METRICS_PORT set each
    child serves its own metrics on that port plus its index, to be scraped one by one.
    Each child's broker client ids get its number (1, 2, ...) after the front's, where they are
    fixed (bridge/identities.py), or the children would take each other's connections over."""
    out = dict(env)
    base = env.get("BRIDGE_METRICS_PORT", "").strip()
    if base.isdigit():  # unset (or invalid: the child's settings refuse it with the reason)
        out["BRIDGE_METRICS_PORT"] = str(int(base) + index)
    front_id = env.get("BRIDGE_FRONT_CLIENT_ID", "").strip()
    if not front_id and _bound(env.get("BRIDGE_MQTT_URL", "")):
        front_id = identities.FRONT_BASE
    if front_id:
        out["BRIDGE_FRONT_CLIENT_ID"] = f"{front_id}-{index + 1}"
    return out


def _bound(mqtt_url: str) -> bool:
    try:
        return MqttEndpoint.from_url(mqtt_url).username_is_client_id
    except ValueError:
        return False  # the child's settings name the problem


def supervise(processes: int, argv: list[str]) -> int:
    """Run ``processes`` copies of ``telemetry-bridge <argv>``; return when told to stop."""
    env = dict(os.environ, BRIDGE_WS_REUSE_PORT="true")
    command = [sys.executable, "-m", "bridge", *child_argv(argv)]
    children = [_Child(command, child_env(env, i)) for i in range(processes)]
    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting %d front processes on one port (SO_REUSEPORT)", processes)
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None and now >= child.restart_at:
                child.start()
            elif child.proc is not None and child.restart_at is None:
                code = child.proc.poll()
                if code is None:
                    continue
                ran = now - child.started
                child.delay = 1.0 if ran >= STABLE_AFTER_S else min(child.delay * 2, 30.0)
                child.restart_at = now + child.delay
                log.error(
                    "front process %d exited with %s after %.0fs; restarting in %.0fs",
                    child.proc.pid, code, ran, child.delay,
                )  # fmt: skip
        time.sleep(0.2)  # a supervisor's poll; the children do the work
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)  # each closes its clients with 1001 and drains
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0
