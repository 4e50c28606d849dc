"""``telemetry-bridge db-url`` and ``telemetry-bridge psql``: the database of this deployment.

The URL is BRIDGE_DATABASE_URL when set, else the embedded database of the ``up`` running on
BRIDGE_STATE_DIR (its ``runtime.json``), so one command serves every case where a hand-made
path to runtime.json broke as soon as the state directory moved.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bridge.front_setup import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "db-url",
        help="print the database URL (BRIDGE_DATABASE_URL, or the running `up`'s)",
        description="Print BRIDGE_DATABASE_URL, or the URL of the embedded database of the "
        "`up` running on BRIDGE_STATE_DIR, for psql, pandas or any other client.",
        epilog='example: psql "$(telemetry-bridge db-url)"',
    )
    sub.add_parser(
        "psql",
        help="open psql on the database (options after it go to psql)",
        description="Run psql on the database that `db-url` prints; every option after "
        "`psql` is passed to psql. Uses psql from PATH, else the one in the embedded "
        "PostgreSQL wheel.",
        epilog="example: telemetry-bridge psql -c '\\dv'   (the views analysts query)",
    )


def find_psql() -> str | None:
    """psql from PATH, else the one the pgserver wheel ships with its server binaries."""
    found = shutil.which("psql")
    if found:
        return found
    spec = importlib.util.find_spec("pgserver")  # located, not imported (that is slow)
    roots = (spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        bundled = Path(root) / "pginstall" / "bin" / "psql"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def psql_command(url: str, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment for psql on ``url``: a password travels in PGPASSWORD, not on the
    command line, where any user of the machine could read it (ps)."""
    psql = find_psql()
    if psql is None:
        raise ConfigError(
            "psql was not found: install the PostgreSQL client (Debian/Ubuntu: apt-get install "
            "postgresql-client; macOS: brew install libpq), or give another client the URL "
            "that `telemetry-bridge db-url` prints"
        )
    env = dict(os.environ)
    parts = urlsplit(url)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))
    return [psql, f"--dbname={url}", *extra], env


def run(command: str, url: str, extra: list[str]) -> int:
    if command == "db-url":
        print(url)
        return 0
    argv, env = psql_command(url, extra)
    # psql takes over this process: its prompt, its signals, its exit code
    os.execve(argv[0], argv, env)  # noqa: S606
    return 0  # pragma: no cover - not reached
