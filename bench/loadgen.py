"""An open-loop HTTP load generator for the web benchmark: requests are sent on a fixed
schedule, and latency is measured from the scheduled time (so a slow server cannot hide its
queueing, unlike a closed loop). Loopback only; bounded in requests and time.

    python -m bench.loadgen --url http://127.0.0.1:8000/predict --rate 3000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlparse

BODY = (
    b'{"ride_id": 156, "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66, '
    b'"lpep_pickup_datetime": "2021-02-03T08:15:00"}}'
)


async def _connection(
    host: str, port: int, path: str, queue: asyncio.Queue, latencies: list, errors: list, api_key: str | None = None
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    key = f"x-api-key: {api_key}\r\n" if api_key else ""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{key}"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    while True:
        scheduled = await queue.get()
        if scheduled is None:
            writer.close()
            return
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head.split(b"\r\n", 1)[0].decode())
        latencies.append(time.perf_counter() - scheduled)
        if b"connection: close" in head.lower():  # e.g. gunicorn's sync workers: no keep-alive
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)


async def run(url: str, rate: float, seconds: float, connections: int, api_key: str | None = None) -> dict:
    parsed = urlparse(url)
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    workers = [
        asyncio.create_task(_connection(parsed.hostname, parsed.port, parsed.path, queue, latencies, errors, api_key))
        for _ in range(connections)
    ]
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(scheduled)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 30)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "rate": rate,
        "sent": total,
        "ok": len(latencies) - len(errors),
        "errors": len(errors),
        "achieved_per_s": len(latencies) / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": pct(100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--api-key", default=None, help="Sent as x-api-key.")
    args = parser.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the load generator only targets loopback")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.connections, args.api_key))))


if __name__ == "__main__":
    main()
