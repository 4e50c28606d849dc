import logging

import pytest

from bridge.logs import RedactTokens


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
