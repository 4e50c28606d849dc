"""The InfluxDB line protocol parser: the reference's examples, its errors, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.mapping.line_protocol import (
    Line,
    _parse_escaped,
    _parse_plain,
    format_line,
    parse_line,
    parse_lines,
)
from ingest.payload import PayloadError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "weather,device=w1,site=a temperature=21.5,humidity=40i 1700000000000000000",
            Line(
                "weather",
                {"device": "w1", "site": "a"},
                {"temperature": 21.5, "humidity": 40},
                1700000000000000000,
            ),
        ),
        ("m v=1", Line("m", {}, {"v": 1.0}, None)),
        ("m v=-1.5e3,w=.5,x=+2.", Line("m", {}, {"v": -1500.0, "w": 0.5, "x": 2.0}, None)),
        (
            "m u=18446744073709551615u,i=-9223372036854775808i",
            Line("m", {}, {"u": 2**64 - 1, "i": -(2**63)}, None),
        ),
        (
            "m a=t,b=TRUE,c=False,d=f",
            Line("m", {}, {"a": True, "b": True, "c": False, "d": False}, None),
        ),
        ('m s="a, b=c \\"q\\" \\\\ end"', Line("m", {}, {"s": 'a, b=c "q" \\ end'}, None)),
        # escapes of the reference: measurement , and space; keys and tag values also =
        (
            "my\\ meas\\,x,t\\ k=v\\=1\\,2 f\\=k=1",
            Line("my meas,x", {"t k": "v=1,2"}, {"f=k": 1.0}, None),
        ),
        # a backslash before anything else is itself; two are one
        ("m\\x,t=a\\\\b v=1", Line("m\\x", {"t": "a\\b"}, {"v": 1.0}, None)),
        ("m v=1 -1000", Line("m", {}, {"v": 1.0}, -1000)),
    ],
)
def test_reference_examples(text: str, expected: Line) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "m",  # no fields
        "m,t v=1",  # tag without value
        "m,=a v=1",  # tag without key
        "m,t= v=1",
        "m v=",
        "m =1",
        "m v=1,",
        "m v=abc",
        "m v=1.2.3",
        "m v=1i2",
        "m v=99999999999999999999i",  # beyond int64
        "m v=-1u",
        'm s="unterminated',
        "m v=1 12ab",
        "m v=1 1 2",
        ",t=a v=1",  # no measurement
        "m v=nan",
        "m v=inf",
    ],
)
def test_malformed_lines(text: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_line(text)
    assert err.value.reason == "invalid_line_protocol"


def test_lines_skip_blank_and_comments_and_number_errors() -> None:
    lines = parse_lines("# header\n\nm v=1\r\n  \nm v=2\n", 10)
    assert [line.fields["v"] for line in lines] == [1.0, 2.0]
    with pytest.raises(PayloadError, match="line 3"):
        parse_lines("m v=1\n# c\nbroken\n", 10)


def test_line_count_is_bounded() -> None:
    with pytest.raises(PayloadError) as err:
        parse_lines("m v=1\n" * 11, 10)
    assert err.value.reason == "too_many_entries"


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
    min_size=1,
    max_size=12,
)
_MEASUREMENT = _TEXT.filter(lambda s: not s.startswith(("#", " ", "\t")))
_VALUE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=12),
)
_LINES = st.builds(
    Line,
    _MEASUREMENT,
    st.dictionaries(_TEXT, _TEXT, max_size=3),
    st.dictionaries(_TEXT, _VALUE, min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)


@given(_LINES)
def test_round_trip(line: Line) -> None:
    assert parse_line(format_line(line)) == line


@given(st.lists(_LINES, min_size=1, max_size=5))
def test_round_trip_of_a_message(lines: list[Line]) -> None:
    assert parse_lines("\n".join(format_line(line) for line in lines), 10) == lines


@given(st.text(max_size=60))
def test_anything_parses_or_is_refused_with_the_reason(text: str) -> None:
    try:
        parse_lines(text, 100)
    except PayloadError as exc:
        assert exc.reason in {"invalid_line_protocol", "too_many_entries"}


def _outcome(parse: object, text: str) -> object:
    try:
        return parse(text, 1)  # type: ignore[operator]
    except PayloadError as exc:
        return exc.reason


@settings(max_examples=1_000)
@example(" m v=1")
@example("m,t=a=b v=1")
@example("m v=1 5 ")
@given(st.text(alphabet="m,= 1i", min_size=1, max_size=16))
def test_the_fast_path_agrees_with_the_scanner(text: str) -> None:
    """Lines without escapes or strings are split, not scanned: same lines, same refusals."""
    assert _outcome(_parse_plain, text) == _outcome(_parse_escaped, text)
