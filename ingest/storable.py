"""What PostgreSQL can hold, checked before a value gets there (pure).

A value the database refuses fails the whole batch transaction it travels in, and every other
device's readings in that batch with it. So whatever a device sends is checked here, at
validation, where it costs one dead letter instead of a failed transaction. What PostgreSQL
refuses that JSON and Python allow:

- text: U+0000 (``text`` cannot hold NUL: SQLSTATE 22021) and lone UTF-16 surrogates (no
  UTF-8 form; the driver fails to encode them). orjson already refuses escaped lone
  surrogates in JSON, but text can also reach us from other parsers, so both are checked.
- numbers: NaN and infinities would be stored, but they are not readings; float8 holds every
  finite double, so a finite Python float always fits (orjson turns integers beyond 64 bits
  into floats and refuses ones that overflow a double).
- timestamps: every aware Python datetime (years 1-9999) lies inside PostgreSQL's timestamptz
  range; the danger is Python itself overflowing while converting one (an ISO time in year 1
  or 9999 with an offset), which :mod:`ingest.payload` reports as out of range.
- length: the caller bounds each text field (units, status reasons); indexed text columns only
  ever receive names checked by :mod:`storage.names`.
"""

from __future__ import annotations


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store ``value`` as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which is not valid UTF-8"
    return None


def db_text(value: str) -> str:
    """``value`` made storable by escaping what PostgreSQL refuses.

    For text the bridge writes itself from untrusted parts (a dead letter's topic and
    detail): those rows must never fail the transaction they are meant to rescue.
    """
    if text_problem(value) is None:
        return value
    escaped = value.replace("\x00", "\\u0000")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")
