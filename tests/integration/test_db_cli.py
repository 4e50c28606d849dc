"""`db-url` and `psql` find the deployment's database in every case; `token` refuses a scope
the front does not know."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.auth import SCOPES
from bridge.db_cli import find_psql
from tests.integration.test_cli import SECRET, run_cli

pytestmark = pytest.mark.integration


def test_token_refuses_unknown_scopes_and_lists_the_valid_ones() -> None:
    done = run_cli(
        "token", "--sub", "me", "--scope", "telemetry:raed alerts:read",
        env={"BRIDGE_JWT_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown scope telemetry:raed" in done.stderr
    assert all(scope in done.stderr for scope in SCOPES)


def test_db_url_prints_the_configured_url(tmp_path: Path) -> None:
    url = "postgresql://someone@db.example:5432/telemetry"
    done = run_cli("db-url", env={"BRIDGE_DATABASE_URL": url, "BRIDGE_STATE_DIR": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == url


def test_db_url_reads_the_running_up_of_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "elsewhere"
    state.mkdir()
    url = "postgresql://postgres:@/postgres?host=/tmp/sockets"
    runtime = {"pid": os.getpid(), "database_url": url, "mqtt_url": "mqtt://127.0.0.1:1883"}
    (state / "runtime.json").write_text(json.dumps(runtime))
    done = run_cli("db-url", env={"BRIDGE_STATE_DIR": str(state)})
    assert done.returncode == 0 and done.stdout.strip() == url, done.stderr


def test_db_url_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    done = run_cli("db-url", env={"BRIDGE_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2 and "BRIDGE_DATABASE_URL" in done.stderr and "up" in done.stderr


def test_psql_runs_on_the_database_with_its_options(database_url: str, tmp_path: Path) -> None:
    if find_psql() is None:
        pytest.skip("no psql (Debian package postgresql-client, or the pgserver wheel)")
    parts = urlsplit(database_url)
    # a password goes to psql in PGPASSWORD, never on its command line
    with_password = urlunsplit(parts._replace(netloc=f"{parts.username}:pw-x@{parts.hostname}:"
                                                     f"{parts.port or 5432}"))  # fmt: skip
    done = run_cli(
        "psql", "-At", "-c", "SELECT 40 + 2",
        env={"BRIDGE_DATABASE_URL": with_password, "BRIDGE_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr
    failed = run_cli(
        "psql", "-c", "SELECT * FROM no_such_table",
        env={"BRIDGE_DATABASE_URL": database_url, "BRIDGE_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert failed.returncode != 0 and "no_such_table" in failed.stderr


def test_other_commands_still_refuse_unknown_options() -> None:
    done = run_cli("token", "--sub", "me", "--no-such-option")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr
