"""The live dashboard page: static files from ``bridge/static`` served on the front's port.

``GET /`` is ``index.html`` and ``GET /static/<name>`` any other file of that directory, or of
its ``vendor/`` subdirectory (third-party files, ``/static/vendor/<name>``). Only names
listed in those directories at start-up are served, compared as exact strings, so no
request path (``..``, ``%2e%2e``, a backslash, a symlink added later) can reach another file.
The files are package data, small and immutable for the life of the process: they are read
once and answered from memory with an ETag, so a reload costs a 304.
"""

from __future__ import annotations

import hashlib
import http
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

STATIC_DIR = Path(__file__).with_name("static")
SUBDIRS = ("vendor",)  # one level, named here: nothing else below STATIC_DIR is served
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# A Host header goes into the CSP only when it is a plain host[:port] (it comes from the client).
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


@cache
def files() -> dict[str, StaticFile]:
    """Every servable file by its exact name (read once; the package does not change)."""
    out = {}
    for prefix, folder in [("", STATIC_DIR)] + [(f"{d}/", STATIC_DIR / d) for d in SUBDIRS]:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            kind = CONTENT_TYPES.get(path.suffix)
            if kind is None or not path.is_file() or path.name.startswith("."):
                continue
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            out[prefix + path.name] = StaticFile(body, kind, etag)
    return out


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path == "/index.html" or path.startswith("/static/")


def content_security_policy(host: str | None) -> str:
    """Everything from this origin only. ``connect-src 'self'`` covers ws:// of the same host
    in current browsers; the explicit ws/wss sources are for those that predate CSP 3."""
    sockets = ""
    if host and _HOST.match(host):
        sockets = f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def response(path: str, request: Request) -> Response:
    name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
    found = files().get(name)
    if found is None:
        return _plain(404, "not found\n")
    headers = Headers(
        [
            ("Content-Type", found.content_type),
            # Names carry no content hash, so caches must revalidate; the ETag makes that a 304.
            ("Cache-Control", "no-cache"),
            ("ETag", found.etag),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
        ]
    )
    if found.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = content_security_policy(request.headers.get("Host"))
    if found.etag in request.headers.get("If-None-Match", ""):
        return Response(304, "Not Modified", headers, b"")
    headers["Content-Length"] = str(len(found.body))
    return Response(200, "OK", headers, found.body)


def _plain(status: int, text: str) -> Response:
    data = text.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, data)
