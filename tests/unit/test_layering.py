"""The architecture's arrows, checked from the source: ``bridge -> ingest -> storage``.

storage imports neither bridge nor ingest, ingest does not import bridge, and bridge holds no
SQL (its statements live in storage repositories). Every import counts, also one inside a
function or under ``TYPE_CHECKING``; nothing is allow-listed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "ingest", "storage")
# SQL in a string literal: the statements bridge must leave to storage
SQL = re.compile(r"\bSELECT\b|\bINSERT\b|\bUPDATE\b.*\bSET\b|\bDELETE FROM\b|pg_advisory", re.S)
# asyncpg's query methods; bridge may hold a pool or connection and pass it, never query it
QUERY_METHODS = frozenset(
    {
        "fetch",
        "fetchrow",
        "fetchval",
        "fetchmany",
        "execute",
        "executemany",
        "cursor",
        "transaction",
        "copy_from_query",
        "copy_from_table",
        "copy_to_table",
        "copy_records_to_table",
    }
)
# A module a newcomer can read in one sitting.
MAX_LINES = 400
SIZED_PACKAGES = ("bridge", "ingest", "storage")


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_packages(path: Path) -> set[str]:
    """Top-level package of everything ``path`` imports (relative imports resolved)."""
    package = path.relative_to(ROOT).parts[0]
    out: set[str] = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the module's own package
                out.add(package)
            elif node.module:
                out.add(node.module.split(".")[0])
    return out


def where(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("storage", {"bridge", "ingest"}), ("ingest", {"bridge"})],
)
def test_dependencies_point_one_way(package: str, forbidden: set[str]) -> None:
    wrong = {
        where(path): sorted(imported_packages(path) & forbidden)
        for path in modules(package)
        if imported_packages(path) & forbidden
    }
    assert wrong == {}, f"{package}/ must not import {sorted(forbidden)}"


def test_bridge_has_no_sql_text() -> None:
    found = [
        f"{where(path)}:{node.lineno}: {node.value[:60]!r}"
        for path in modules("bridge")
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]
    assert found == [], "SQL belongs in a storage repository"


def test_bridge_runs_no_queries() -> None:
    found = [
        f"{where(path)}:{node.lineno}: .{node.func.attr}()"
        for path in modules("bridge")
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in QUERY_METHODS
    ]
    assert found == [], "call a storage function instead"


@pytest.mark.parametrize("package", SIZED_PACKAGES)
def test_modules_stay_small(package: str) -> None:
    long = {
        where(path): n
        for path in modules(package)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split {package} modules over {MAX_LINES} lines"


def test_the_checks_see_what_they_look_for() -> None:
    """The detectors themselves: a check that finds nothing because it looks wrong is no check."""
    assert SQL.search("SELECT 1") and SQL.search("UPDATE commands\n SET status = $2")
    assert SQL.search("DELETE FROM rules") and SQL.search("pg_advisory_lock($1)")
    assert not SQL.search("select a subscription") and not SQL.search("an UPDATE frame")
    sample = ROOT / "storage" / "readings.py"
    assert {"asyncpg", "storage"} <= imported_packages(sample)
