"""The address the per-IP connection limit counts, behind a trusted proxy or not."""

import ipaddress

import pytest

from bridge.handshake import client_ip

PROXY = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("203.0.113.5", None, PROXY, "203.0.113.5"),  # direct client
        ("203.0.113.5", "1.2.3.4", PROXY, "203.0.113.5"),  # untrusted peer: header ignored
        ("127.0.0.1", "198.51.100.7", PROXY, "198.51.100.7"),  # nginx in front
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", PROXY, "198.51.100.7"),  # spoofed left part
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", PROXY, "198.51.100.7"),  # two proxies
        ("127.0.0.1", "not-an-ip", PROXY, "127.0.0.1"),  # garbage: count the proxy
        ("127.0.0.1", "198.51.100.7", (), "127.0.0.1"),  # no proxies configured
        ("127.0.0.1", "2001:db8::1", PROXY, "2001:db8::1"),
    ],
)
def test_client_ip(
    peer: str, header: str | None, trusted: tuple[ipaddress.IPv4Network, ...], expected: str
) -> None:
    assert client_ip(peer, header, trusted) == expected
