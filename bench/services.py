"""What a benchmark runs against, each a context manager that cleans up after itself: a private
mosquitto, a fresh migrated database, and the bridge as processes (``python -m bridge serve``,
``python -m bridge ingest``) with their settings as ``BRIDGE_*`` variables.

    with mosquitto(tmp / "mosquitto") as broker, front_process(broker.url, None, tmp) as front:
        ...
    async with fresh_database(admin_url) as database_url:
        with ingest_processes(bridge_env(database_url=..., mqtt_url=...), tmp / "ingest.log"):
            wait_log(tmp / "ingest.log", "ingest subscribed")

A process's environment is this one without its ``BRIDGE_*`` variables plus what the bench
sets, so a shell's settings do not leak into a measurement.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bridge.auth import mint
from bridge.embedded import free_port, project_mosquitto_conf, render_mosquitto_conf, wait_for_port

SECRET = "bench-secret-" + "b" * 40
DEFAULT_ADMIN = os.environ.get(
    "BRIDGE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# -- processes ----------------------------------------------------------------------------------
def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """``sig`` (an orderly stop), then SIGKILL past ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def bridge_env(**settings: object) -> dict[str, str]:
    """This environment without ``BRIDGE_*``, plus ``settings`` as ``BRIDGE_<NAME>`` (a None
    value is left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({f"BRIDGE_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    return env


@contextlib.contextmanager
def bridge_process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    *,
    cwd: Path | None = None,
    stop_timeout: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m bridge <args>``, its output appended to ``log``; SIGTERM on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    try:
        yield proc
    finally:
        stop_process(proc, timeout=stop_timeout)


def wait_log(log: Path, text: str, times: int = 1, timeout: float = 30.0) -> None:
    """Until ``text`` stands ``times`` times in ``log`` (an ingest logs "ingest subscribed" at
    INFO once it is ready)."""
    end = time.monotonic() + timeout
    while log.read_text().count(text) < times:
        if time.monotonic() > end:
            raise RuntimeError(f"{text!r} not logged {times}x: {log.read_text()[-2000:]}")
        time.sleep(0.05)


# -- mosquitto ----------------------------------------------------------------------------------
@dataclass
class Mosquitto:
    """A mosquitto child process: the project's mosquitto.conf on a free port with its data in
    ``data_dir``, plus ``extra_conf`` (another listener, say). ``restart`` keeps port and data."""

    data_dir: Path
    extra_conf: str = ""
    persistence: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = render_mosquitto_conf(
            project_mosquitto_conf(), port=self.port, data_dir=self.data_dir
        )
        if not self.persistence:
            conf = conf.replace("persistence true", "persistence false")
        path = self.data_dir / "mosquitto.conf"
        path.write_text(conf + self.extra_conf)
        with open(self.data_dir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.proc)
        return self.url

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after 10 s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def mosquitto(
    data_dir: Path, *, extra_conf: str = "", persistence: bool = True
) -> Iterator[Mosquitto]:
    broker = Mosquitto(data_dir, extra_conf, persistence)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# -- PostgreSQL ---------------------------------------------------------------------------------
def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (its query string kept)."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def _admin(admin_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(
    admin_url: str = DEFAULT_ADMIN,
    *,
    name: str | None = None,
    prefix: str = "tb_bench",
    migrate: bool = True,
    keep: bool = False,
) -> AsyncIterator[str]:
    """A new database next to ``admin_url`` (``name``, else ``prefix`` and a random suffix;
    one left over by that name is dropped first), migrated unless ``migrate=False``, yielded
    as its URL and dropped afterwards unless ``keep``."""
    leftover = name is not None
    name = name or f"{prefix}_{uuid.uuid4().hex[:12]}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    await _admin(admin_url, *([drop] if leftover else []), f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        if migrate:
            from bridge.app import run_migrations  # only here: the rest is light to import

            await run_migrations(url)
        yield url
    finally:
        if not keep:
            await _admin(admin_url, drop)


# -- the bridge ---------------------------------------------------------------------------------
def _get_json(url: str, timeout: float) -> Any:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(url)
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (checked above)
        return json.loads(r.read())


def proc_status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


@dataclass
class FrontProcess:
    proc: subprocess.Popen[bytes]
    port: int
    prefix: str
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def token(self, scope: str = "telemetry:read alerts:read devices:read", **kw: Any) -> str:
        return mint(key=SECRET, algorithm="HS256", sub=kw.pop("sub", "alice"), scopes=scope, **kw)

    def rss_mb(self) -> float:
        return proc_status_mb(self.proc.pid, "VmRSS")

    def peak_rss_mb(self) -> float:
        """The kernel's high-water mark of the resident set (since the last reset_peak)."""
        return proc_status_mb(self.proc.pid, "VmHWM")

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def metrics(self) -> dict[str, Any]:
        return dict(_get_json(f"http://127.0.0.1:{self.port}/metrics", 5))

    def connections(self) -> int:
        return int(self.metrics()["connections"]["current"])

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until /health says the front's MQTT link is up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = _get_json(f"http://127.0.0.1:{self.port}/health", 1)
                if body["checks"].get("mqtt") == "ok":
                    return
            except (OSError, ValueError, KeyError):  # URLError is an OSError
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"front did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)


@contextlib.contextmanager
def front_process(
    mqtt_url: str,
    database_url: str | None,
    tmp: Path,
    *,
    prefix: str = "",
    processes: int = 1,
    code_dir: Path | None = None,
    **settings: object,
) -> Iterator[FrontProcess]:
    """``python -m bridge serve [--processes N]`` on a free port with ``SECRET`` and
    ``BRIDGE_<SETTING>`` from ``settings``, yielded once its MQTT link is up, stopped
    afterwards. ``code_dir``: run the ``bridge`` package of another checkout (an older commit)
    with this interpreter."""
    port = free_port()
    env = bridge_env(
        mqtt_url=mqtt_url,
        database_url=database_url,
        mqtt_topic_prefix=prefix,
        jwt_secret=SECRET,
        ws_port=port,
        state_dir=tmp / "state",
        **{"ws_new_connections_per_ip_per_min": 1_000_000, **settings},
    )
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    log = tmp / f"front-{port}.log"
    args = ["serve"] if processes == 1 else ["serve", "--processes", str(processes)]
    with bridge_process(args, env, log, cwd=code_dir) as proc:
        front = FrontProcess(proc, port, prefix, log)
        front.wait_ready()
        yield front


def ingest_env(database_url: str, mqtt_url: str, prefix: str, **settings: object) -> dict[str, str]:
    """An ingest's environment: topic ``prefix``, a persistent session (client id) of its own,
    INFO logging (``wait_log`` looks for "ingest subscribed"), then ``settings``."""
    defaults = {"ingest_client_id": f"bench-{uuid.uuid4().hex[:6]}", "log_level": "INFO"}
    return bridge_env(
        database_url=database_url,
        mqtt_url=mqtt_url,
        mqtt_topic_prefix=prefix,
        **{**defaults, **settings},
    )


@contextlib.contextmanager
def ingest_processes(
    env: dict[str, str], log: Path, n: int = 1
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` ingest processes (``python -m bridge ingest``); several share the subscription
    ($share), each with its own persistent session (client id). Stopped in order on exit, each
    given a minute to flush."""
    if n == 1:
        commands = [["ingest"]]
    else:
        client_id = env["BRIDGE_INGEST_CLIENT_ID"]
        commands = [["ingest", "--shared", "--client-id", f"{client_id}-{k}"] for k in range(n)]
    with contextlib.ExitStack() as procs:
        yield [procs.enter_context(bridge_process(c, env, log, stop_timeout=60)) for c in commands]
