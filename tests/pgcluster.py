"""A private PostgreSQL cluster a test may stop and start (the shared server must stay up).

It uses the system's PostgreSQL binaries, else those of the pgserver wheel (the embedded
PostgreSQL `up` uses), so it runs on a machine with nothing but Python too.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from bridge.embedded import free_port
from tests.helpers import no_postgres


def _bin_dir() -> Path | None:
    if not no_postgres():
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if found:
            return Path(found[-1]).parent
        pg_ctl = shutil.which("pg_ctl")
        if pg_ctl:
            return Path(pg_ctl).parent
    try:
        from pgserver._commands import (  # type: ignore[import-not-found, unused-ignore]
            POSTGRES_BIN_PATH,
        )
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH) if (Path(POSTGRES_BIN_PATH) / "pg_ctl").exists() else None


def _system_user() -> str:
    """Who runs PostgreSQL for root: ``postgres``, else the user pgserver creates for itself."""
    for name in ("postgres", "pgserver"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root without a `postgres` or `pgserver` user")


class PrivatePostgres:
    """initdb + pg_ctl in a temporary directory; as root, run as the ``postgres`` user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, base: Path) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries (pg_ctl) on this machine")
        self.bin = bin_dir
        self.data = base / "pgdata"
        self.sockets = base / "sockets"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
            user = _system_user()
            self._as_user = ["runuser", "-u", user, "--"]
            base.chmod(0o755)
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.sockets, user)
            self.data.mkdir()
            shutil.chown(self.data, user)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "60",
            "-l", str(self.data / "server.log"), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
