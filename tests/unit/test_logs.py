import logging

import pytest

from bridge.logs import RedactTokens, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("< GET /ws?token=abc.def.ghi HTTP/1.1", "< GET /ws?token=*** HTTP/1.1"),
        ("GET /ws?x=1&token=abc&y=2", "GET /ws?x=1&token=***&y=2"),
        ("< Authorization: Bearer abc.def.ghi", "< Authorization: Bearer ***"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    record = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "%s", (text,), None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("< GET /ws?tok%65n=abc HTTP/1.1", "< GET /ws?tok%65n=*** HTTP/1.1"),
        ("< GET /ws?%74%6F%6B%65%6E=abc&x=1", "< GET /ws?%74%6F%6B%65%6E=***&x=1"),
        ("GET /?TOKEN=abc", "GET /?TOKEN=***"),
        ("GET /?tok%2565n=abc", "GET /?tok%2565n=***"),  # encoded twice
        ("GET /?token+=abc", "GET /?token+=***"),  # '+' is a space, stripped
        ("GET /?access_token=abc&api_key=def", "GET /?access_token=***&api_key=***"),
        ("GET /?tokens=abc&device_id=d1", "GET /?tokens=abc&device_id=d1"),
        ("< Cookie: sid=abc; other=def", "< Cookie: ***"),
        ("> Set-Cookie: sid=abc; Path=/", "> Set-Cookie: ***"),
        ("< x-token: abc", "< x-token: ***"),
        ("< X-Api-Key: abc", "< X-Api-Key: ***"),
        ("< X-Auth-Token: abc", "< X-Auth-Token: ***"),
        ("< Authorization: Basic dXNlcjpwYXNz", "< Authorization: Basic ***"),
        ("< Authorization: abc.def.ghi", "< Authorization: ***"),
        ("< Proxy-Authorization: Basic abc", "< Proxy-Authorization: Basic ***"),
        ("< Referer: http://h/?token=abc", "< Referer: http://h/?token=***"),
        ("< Host: example.com:8765", "< Host: example.com:8765"),
        ("invalid HTTP header value: abc\x01", "invalid HTTP header value: ***"),
        (
            "unsupported protocol; expected HTTP/1.1 or HTTP/1.0: GET /ws?token=abc HTTP/2",
            "unsupported protocol; expected HTTP/1.1 or HTTP/1.0: GET /ws?token=*** HTTP/2",
        ),
    ],
)
def test_redaction_of_every_spelling(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_tracebacks_are_redacted_too() -> None:
    try:
        raise ValueError("invalid HTTP request line: GET /ws?token=abc.def HTTP/9")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "websockets.server", logging.DEBUG, __file__, 1, "! bad", (), sys.exc_info()
        )
    assert RedactTokens().filter(record)
    text = logging.Formatter().format(record)
    assert "abc.def" not in text and "token=***" in text
