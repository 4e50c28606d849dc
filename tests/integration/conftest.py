"""Fixtures shared by the integration tests of the front."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.services import Mosquitto, mosquitto
from tests.integration.frontkit import stack_fixture

stack = pytest.fixture(stack_fixture)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of the test's own, for a test that restarts it."""
    with mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
