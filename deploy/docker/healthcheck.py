"""Container HEALTHCHECK for the telemetry-bridge image (see the root Dockerfile).

The one image runs `serve`, `ingest`, `scheduler` or `migrate`, chosen by the command. Only the
front has an HTTP endpoint: for it, GET /health on its own port (200 = healthy or degraded,
503 = neither broker nor database reachable). For the other commands there is nothing to ask
over HTTP, so the check passes while the process runs (the container's restart policy sees it
die). Standard library only; runs as the image's user.
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys


def command() -> list[str]:
    with open("/proc/1/cmdline", "rb") as f:  # PID 1: the entrypoint (or tini with `init: true`)
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def main() -> int:
    if "serve" not in command():
        return 0
    port = int(os.environ.get("BRIDGE_WS_PORT", "8765"))
    conn: http.client.HTTPConnection
    if os.environ.get("BRIDGE_WS_TLS_CERT") and os.environ.get("BRIDGE_WS_TLS_KEY"):
        context = ssl.create_default_context()
        context.check_hostname = False  # the certificate names the public host, not 127.0.0.1
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=4, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
    try:
        conn.request("GET", "/health")
        status = conn.getresponse().status
    except OSError as exc:
        print(f"GET /health on port {port}: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
