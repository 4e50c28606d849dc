"""Fixtures of the conformance suite: the real stack (front + ingest + PostgreSQL + mosquitto)
and, for the seed documents' JavaScript clients, node with the ``ws`` package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.frontkit import stack_fixture

stack = pytest.fixture(stack_fixture)


@pytest.fixture(scope="session")
def node_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where ``require('ws')`` works (the browser clients' WebSocket under node).
    Skipped with the reason when node or npm is missing or the registry cannot be reached."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are needed to run the seed documents' JavaScript clients")
    where = tmp_path_factory.mktemp("seed-node")
    done = subprocess.run(
        ["npm", "install", "--no-save", "--no-audit", "--no-fund", "ws@8"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        pytest.skip(f"npm could not install ws: {done.stderr[-300:]}")
    return where
