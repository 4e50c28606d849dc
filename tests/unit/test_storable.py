"""What PostgreSQL can hold: the checks at validation and the escaping of the bridge's own text."""

from __future__ import annotations

import asyncpg
import pytest

from ingest.payload import PayloadError
from ingest.status import parse_status
from ingest.storable import db_text, text_problem
from storage.errors import is_data_error, is_transient


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("°C", None),
        ("", None),
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("\ud800", "surrogate"),
        ("x\udfffy", "surrogate"),
    ],
)
def test_text_problem(text: str, problem: str | None) -> None:
    found = text_problem(text)
    assert (found is None) if problem is None else (problem in (found or ""))


@pytest.mark.parametrize("text", ["plain", "a\x00b", "\ud800", "é\x00\udc00/#"])
def test_db_text_is_always_storable_and_keeps_clean_text(text: str) -> None:
    out = db_text(text)
    assert text_problem(out) is None
    out.encode("utf-8")  # what the driver does
    if text_problem(text) is None:
        assert out == text
    assert "\x00" not in out


def test_status_reason_with_nul_is_refused_with_a_reason() -> None:
    with pytest.raises(PayloadError) as err:
        parse_status(b'{"status": "online", "reason": "boot\\u0000ed"}')
    assert err.value.reason == "validation_error"
    assert "NUL" in err.value.message
    assert parse_status(b'{"status": "online", "reason": "booted"}') == ("online", "booted")


@pytest.mark.parametrize(
    ("exc", "data", "transient"),
    [
        (asyncpg.CharacterNotInRepertoireError("0x00"), True, False),  # 22021: NUL in text
        (asyncpg.NumericValueOutOfRangeError("out of range"), True, False),  # 22003
        (asyncpg.CheckViolationError("check"), True, False),  # 23514
        (asyncpg.ProgramLimitExceededError("index row too big"), True, False),  # 54000
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True, False),
        (asyncpg.exceptions._base.DataError("invalid input"), True, True),  # client-side
        (asyncpg.UndefinedTableError("no table"), False, False),  # 42P01: not the rows' fault
        (asyncpg.InsufficientPrivilegeError("denied"), False, False),
        (asyncpg.AdminShutdownError("shutdown"), False, True),
        (ConnectionResetError(), False, True),
        (asyncpg.exceptions.ClientConfigurationError("bad dsn"), False, True),
        (TypeError("must be real number, not str"), False, False),  # a bug, not the data
    ],
)
def test_which_errors_the_rows_caused(exc: BaseException, data: bool, transient: bool) -> None:
    assert is_data_error(exc) is data
    assert is_transient(exc) is transient
