"""The pure parts of the command line's output: rounding, rows, payload display, rate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.console import format_count, format_value
from bridge.dead_letters_cli import HEX_BYTES, TEXT_CHARS, payload_text
from bridge.query_cli import table_rows
from bridge.simulate_report import RateWindow


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.0, "0"),
        (21.347, "21.35"),
        (-67.0, "-67"),
        (1013.27, "1013"),  # the integer part is never rounded away
        (123456.7, "123457"),
        (0.012345, "0.01235"),
        (99.996, "100"),
        (-0.00001234567, "-1.235e-05"),
        (2.5e18, "2.5e+18"),
        (None, ""),
    ],
)
def test_values_are_rounded_by_magnitude(value: float | None, shown: str) -> None:
    assert format_value(value) == shown


def test_counts_are_integers_and_carry_no_unit() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    units = {("d", "temperature"): "°C"}
    rows = [("d", "temperature", ts, 3.0)]
    assert table_rows(rows, units, counts=True) == [
        ("d", "temperature", "2026-01-01T00:00:00.000Z", "3", "")
    ]
    assert table_rows([("d", "temperature", ts, 21.347)], units, counts=False)[0][3:] == (
        "21.35",
        "°C",
    )
    assert format_count(2.9999999) == "3"


def test_payloads_show_as_escaped_text_or_hex() -> None:
    assert payload_text(b'{"a": 1}') == ('{"a": 1}', True)
    assert payload_text(b"bad\n\x1b[2J\x07") == ("bad\\n\\x1b[2J\\x07", True)
    long_text, is_text = payload_text(b"x" * (TEXT_CHARS + 5))
    assert is_text and long_text == "x" * TEXT_CHARS + " ..."
    assert payload_text(b"\xff\x00\x01") == ("ff 00 01", False)
    long_hex, is_text = payload_text(b"\xff" * (HEX_BYTES + 1))
    assert not is_text and long_hex.endswith(" ...") and long_hex.count("ff") == HEX_BYTES


def test_the_rate_is_over_a_sliding_window() -> None:
    window = RateWindow(window_s=5)
    assert window.add(0.0, 0) == 0.0
    for second in range(1, 11):  # 10 messages a second
        rate = window.add(float(second), second * 10)
        assert rate == pytest.approx(10.0)
    # a stall shows within the window instead of being averaged over the whole run
    assert window.add(15.0, 100) == pytest.approx(0.0)
