"""Idle authenticated WebSocket connections in one front process: memory per connection with
and without permessage-deflate, and the time to accept them.

    .venv/bin/python -m bench.connections [--connections 10000] [--concurrency 200]

For each setting a fresh front (``telemetry-bridge serve``) is started against a private
mosquitto; its RSS is read from /proc after one warm-up connection and again once every
connection is open, authenticated (Bearer header) and greeted, and has been idle for 3 s.
Memory per connection = RSS difference / connections. The client holds all connections in one
asyncio process (its own memory is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bridge.auth import mint
from bridge.embedded import MosquittoProcess, free_port

SECRET = "connections-bench-secret-" + "c" * 40
RESULTS = Path(__file__).parent / "results"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_all(
    url: str, token: str, n: int, concurrency: int, deflate: bool
) -> tuple[list[ClientConnection], float]:
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> ClientConnection:
        async with gate:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=60,
                compression="deflate" if deflate else None,
            )
            await ws.recv()  # the greeting: authenticated and served
            return ws

    t0 = time.monotonic()
    conns = await asyncio.gather(*(one() for _ in range(n)))
    return list(conns), time.monotonic() - t0


def start_front(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve"], env=env, stdout=log, stderr=log
        )


async def measure(
    args: argparse.Namespace, deflate: bool, mqtt_url: str, tmp: Path
) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_MQTT_URL=mqtt_url,
        BRIDGE_JWT_SECRET=SECRET,
        BRIDGE_WS_PORT=str(port),
        BRIDGE_WS_MAX_CONNECTIONS=str(args.connections + 100),
        BRIDGE_WS_MAX_CONNECTIONS_PER_SUB=str(args.connections + 100),
        BRIDGE_WS_NEW_CONNECTIONS_PER_IP_PER_MIN="10000000",
        BRIDGE_WS_COMPRESSION="true" if deflate else "false",
        BRIDGE_LOG_LEVEL="WARNING",
        BRIDGE_STATE_DIR=str(tmp / "state"),
    )
    front = start_front(env, tmp / f"front-{deflate}.log")
    try:
        await asyncio.sleep(3)
        url = f"ws://127.0.0.1:{port}/ws"
        token = mint(key=SECRET, algorithm="HS256", sub="idle", scopes="telemetry:read", ttl_s=3600)
        warm, _ = await open_all(url, token, 1, 1, deflate)
        await asyncio.sleep(1)
        before = rss_kib(front.pid)
        conns, seconds = await open_all(url, token, args.connections, args.concurrency, deflate)
        await asyncio.sleep(3)
        after = rss_kib(front.pid)
        for ws in conns + warm:
            await ws.close()
        return {
            "deflate": deflate,
            "connections": args.connections,
            "accept_s": round(seconds, 2),
            "accept_per_s": round(args.connections / seconds),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "kib_per_connection": round((after - before) / args.connections, 1),
        }
    finally:
        front.send_signal(signal.SIGTERM)
        front.wait(30)


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    args = ap.parse_args()
    command = " ".join([".venv/bin/python -m bench.connections", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="conns-"))
    broker = MosquittoProcess(tmp / "mosquitto", port=free_port())
    mqtt_url = broker.start()
    rows = []
    try:
        for deflate in (False, True):
            row = await measure(args, deflate, mqtt_url, tmp)
            rows.append(row)
            print(row, flush=True)
    finally:
        broker.stop()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"connections-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    asyncio.run(main())
