"""Fixtures shared by the integration tests of the front."""

import pytest

from tests.integration.frontkit import stack_fixture

stack = pytest.fixture(stack_fixture)
