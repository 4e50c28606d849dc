"""Idle authenticated WebSocket connections in one front process: memory per connection with
and without permessage-deflate, and the time to accept them.

    .venv/bin/python -m bench.connections [--connections 10000] [--concurrency 200]

For each setting a fresh front (``telemetry-bridge serve``, bench/services.py) is started
against a private mosquitto; its RSS is read from /proc after one warm-up connection and again
once every connection is open, authenticated (Bearer header) and greeted, and has been idle
for 3 s.
Memory per connection = RSS difference / connections. The client holds all connections in one
asyncio process (its own memory is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.services import front_process, mosquitto

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


async def measure(
    args: argparse.Namespace, deflate: bool, mqtt_url: str, tmp: Path
) -> dict[str, Any]:
    with front_process(
        mqtt_url,
        None,
        tmp,
        ws_max_connections=args.connections + 100,
        ws_max_connections_per_sub=args.connections + 100,
        ws_new_connections_per_ip_per_min=10_000_000,
        ws_compression="true" if deflate else "false",
        log_level="WARNING",
    ) as front:
        url = f"{front.url}/ws"
        token = front.token(scope="telemetry:read", sub="idle", ttl_s=3600)
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
    rows = []
    with mosquitto(tmp / "mosquitto") as broker:
        for deflate in (False, True):
            row = await measure(args, deflate, broker.url, tmp)
            rows.append(row)
            print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"connections-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    asyncio.run(main())
