"""Which Origin headers the front admits (bridge.origins), as a table."""

from __future__ import annotations

import pytest

from bridge.origins import origin_address, origin_allowed, same_host

HOST = "127.0.0.1:8765"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8765", HOST, True),
        ("http://localhost:8765", HOST, True),  # loopback names are one host
        ("http://[::1]:8765", HOST, True),
        ("http://localhost:8765", "[::1]:8765", True),
        ("http://127.0.0.1:8766", HOST, False),  # another app on the same machine
        ("http://127.0.0.1", HOST, False),
        ("https://dash.example", "dash.example", True),  # a proxy passing Host: $host
        ("http://dash.example", "dash.example", True),
        ("https://DASH.example", "dash.example:443", True),
        ("https://dash.example:8443", "dash.example", False),
        ("https://dash.example.evil", "dash.example", False),
        ("https://evil.example", HOST, False),
        ("http://192.168.1.5:8765", HOST, False),  # not loopback: not the same host
        ("null", HOST, False),
        ("file://", HOST, False),
        ("http://127.0.0.1:99999", HOST, False),  # not a valid port
        ("http://127.0.0.1:8765", None, False),
        ("http://127.0.0.1:8765", "", False),
    ],
)
def test_same_host(origin: str, host: str | None, same: bool) -> None:
    assert same_host(origin, host) is same


def test_origin_address() -> None:
    assert origin_address("https://Dash.Example") == ("dash.example", 443)
    assert origin_address("http://[::1]:8080") == ("::1", 8080)
    assert origin_address("null") is None
    assert origin_address("chrome-extension://abc") is None


LISTED = ("https://dash.example",)


@pytest.mark.parametrize(
    ("origin", "listed", "anonymous_admin", "allowed"),
    [
        # authentication required, nothing listed: the token is the gate, any origin
        ("https://evil.example", (), False, True),
        # authentication required, a list: listed origins and the bridge's own pages
        ("https://evil.example", LISTED, False, False),
        ("https://dash.example", LISTED, False, True),
        ("http://localhost:8765", LISTED, False, True),
        # anonymous admin: the bridge's own pages, plus what is listed
        ("https://evil.example", (), True, False),
        ("null", (), True, False),
        ("http://127.0.0.1:8765", (), True, True),
        ("http://localhost:8765", (), True, True),
        ("http://localhost:3000", (), True, False),
        ("https://dash.example", LISTED, True, True),
        ("https://evil.example", LISTED, True, False),
        # no Origin: not a browser, which could claim any origin it liked
        (None, (), True, True),
        (None, LISTED, False, True),
    ],
)
def test_origin_allowed(
    origin: str | None, listed: tuple[str, ...], anonymous_admin: bool, allowed: bool
) -> None:
    assert origin_allowed(origin, HOST, listed, anonymous_admin=anonymous_admin) is allowed
