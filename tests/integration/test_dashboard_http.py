"""The dashboard's files over plain HTTP on the front's port: types, caching, CSP, and no
way out of the static directory. (The page itself runs in test_dashboard.py.)"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.frontkit import Stack, recv

pytestmark = pytest.mark.integration


async def get(stack: Stack, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    host, port = stack.url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{h}\r\n" for h in headers)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n".encode()
    )
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


async def test_page_and_assets(stack: Stack) -> None:
    status, headers, body = await get(stack, "/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    csp = headers["content-security-policy"]
    port = stack.url.rsplit(":", 1)[1]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert f"ws://127.0.0.1:{port}" in csp and "'unsafe-" not in csp
    for name, kind in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
        ("vendor/uPlot-LICENSE.txt", "text/plain; charset=utf-8"),
    ]:
        status, headers, body = await get(stack, f"/static/{name}")
        assert (status, headers["content-type"]) == (200, kind) and body
        again, _, empty = await get(stack, f"/static/{name}", f"If-None-Match: {headers['etag']}")
        assert (again, empty) == (304, b"")


async def test_no_path_leaves_the_static_directory(stack: Stack) -> None:
    for path in [
        "/static/../dashboard.py",
        "/static/%2e%2e/dashboard.py",
        "/static/..%2fserver.py",
        "/static//etc/passwd",
        "/static/",
        "/static/nope.js",
        "/static/.hidden",
        "/static/vendor/",
        "/static/vendor/README.md",
        "/static/vendor/../dashboard.py",
        "/static/vendor/%2e%2e/app.js",
        "/../pyproject.toml",
    ]:
        status, _, body = await get(stack, path)
        assert status == 404, path
        assert b"import" not in body and b"root:" not in body


async def test_websocket_on_the_bare_host_still_works(stack: Stack) -> None:
    # GET / with Upgrade: websocket is the Zhineng dialect's endpoint, not the page
    ws = await stack.client(stack.token(), path="/")
    try:
        await ws.send('{"type": "ping", "id": 1}')
        assert (await recv(ws))["type"] == "pong"
    finally:
        await ws.close()
