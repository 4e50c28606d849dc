"""The ingest's settings reach its config: BRIDGE_INGEST_WRITERS and its bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.app import ingest_config
from bridge.config import Settings

DB = "postgresql://127.0.0.1/test"
MQTT = "mqtt://127.0.0.1:1883"


def test_writers_default_to_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_INGEST_WRITERS", raising=False)
    assert ingest_config(Settings(), DB, MQTT).writers == 2


def test_writers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGEST_WRITERS", "1")
    assert ingest_config(Settings(), DB, MQTT).writers == 1


@pytest.mark.parametrize("bad", ["0", "5", "two"])
def test_writers_out_of_range_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("BRIDGE_INGEST_WRITERS", bad)
    with pytest.raises(ValidationError, match="ingest_writers"):
        Settings()
