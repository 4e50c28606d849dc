"""Package metadata: an SPDX licence with its file (no setuptools deprecation warnings on
install) and the links and classifiers an index page shows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = _pyproject()["project"]
    # a TOML table ({text = ...}) makes setuptools >= 77 print a deprecation warning per build
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # SPDX says it


def test_build_backend_understands_spdx_licenses() -> None:
    requires = _pyproject()["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)", setuptools)
    assert match and int(match.group(1)) >= 77


def test_metadata_has_links_authors_classifiers_and_keywords() -> None:
    project = _pyproject()["project"]
    assert {"Homepage", "Documentation", "Issues"} <= set(project["urls"])
    assert all(u.startswith("https://") for u in project["urls"].values())
    assert project["authors"] and project["keywords"]
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]
