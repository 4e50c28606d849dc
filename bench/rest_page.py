"""The JSON body of one big telemetry query: building the page and encoding it, in-process.

    .venv/bin/python -m bench.rest_page                 # 10 series x 1,000 points
    .venv/bin/python -m bench.rest_page --series 1 --points 10000

Times bridge.history.page_body (the response model since issue 17) plus orjson encoding, the
part of ``GET /api/v1/telemetry`` that runs per row in this process; median and p90 of
--reps runs. The database query itself is bench/query.py's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import orjson

from bridge.history import page_body
from storage.query_spec import parse_query
from storage.telemetry import Page, Series

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    series = [
        Series(
            f"d-{i}",
            "temperature",
            [(T0 + timedelta(seconds=s), 20.0 + s / 7) for s in range(args.points)],
        )
        for i in range(args.series)
    ]
    page = Page(series, None)
    query = parse_query({"device_id": [s.device_id for s in series], "from": "-1d"}, T0)
    times = []
    size = 0
    for _ in range(args.reps):
        start = time.perf_counter()
        size = len(orjson.dumps(page_body(query, page)))
        times.append(time.perf_counter() - start)
    times.sort()
    print(
        f"{args.series * args.points} points, {size} bytes: "
        f"median {statistics.median(times) * 1e3:.2f} ms, "
        f"p90 {times[int(0.9 * len(times))] * 1e3:.2f} ms over {args.reps} runs"
    )


if __name__ == "__main__":
    main()
