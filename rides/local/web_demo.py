"""The combined mode in `make run`: a few rides sent to the real web service with the rider's
consent, over HTTP with an API key, each followed by server-sent events until its decision."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson


@dataclass
class WebRide:
    ride_id: str
    actual: float  # the real duration (minutes), from the TLC row
    quick: float | None = None
    quick_model: str = ""
    quick_ms: float = 0.0  # request sent → quick answer received
    enhanced: float | None = None
    enhanced_model: str = ""
    enhanced_ms: float | None = None  # request sent → enhanced answer received
    decision: str | None = None
    flags: tuple[str, ...] = ()
    decision_ms: float | None = None


@dataclass
class WebDemo:
    rides: list[WebRide]
    unauthenticated_status: int


def parse_events(lines) -> Iterator[tuple[str, dict]]:
    """Server-sent events from an iterator of lines, each (event, data) as soon as it is read."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            yield name, orjson.loads(line[6:])
            name = None


def run_web_rides(frame, *, aws: dict, names, count: int = 5, wait: float = 20.0) -> WebDemo:
    """Serve the quick model (ride-duration-quick@production) on 127.0.0.1 and send `count`
    rides of `frame` (TLC rows) with consent, one request each, reading its events."""
    import httpx
    import uvicorn

    from rides.local.backend import free_port
    from rides.models.serving import load_serving_model
    from rides.stream.decision import DecisionStore
    from rides.web.app import DEFAULT_MODEL, create_app
    from rides.web.auth import ApiKeys, new_key
    from rides.web.service import RideService

    key, entry = new_key("demo-backend")
    service = RideService(
        load_serving_model(DEFAULT_MODEL),
        kinesis=aws["kinesis"],
        input_stream=names.input_stream,
        decisions=DecisionStore(aws["dynamodb"], names.decisions_table),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service, ApiKeys(entry)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the web service did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/predict"
        rides = []
        with httpx.Client(timeout=wait + 10) as client:
            first = frame.iloc[0]
            unauthenticated = client.post(url, json=_event("web-0", first)).status_code
            for position in range(min(count, len(frame))):
                row = frame.iloc[position]
                ride = WebRide(f"web-{position + 1}", float(row.duration))
                sent = time.perf_counter()
                with client.stream(
                    "POST",
                    url,
                    params={"wait": wait},
                    json={**_event(ride.ride_id, row), "stream": True},
                    headers={"x-api-key": key, "accept": "text/event-stream"},
                ) as response:
                    response.raise_for_status()
                    for name, data in parse_events(response.iter_lines()):
                        elapsed = (time.perf_counter() - sent) * 1000
                        if name == "quick":
                            ride.quick, ride.quick_model, ride.quick_ms = (
                                data["ride_duration"],
                                f"{data['model']} v{data['version']}",
                                elapsed,
                            )
                        elif name == "enhanced":
                            ride.enhanced, ride.enhanced_model, ride.enhanced_ms = (
                                data["ride_duration"],
                                f"{data['model']} v{data['version']}",
                                elapsed,
                            )
                        elif name == "decision":
                            ride.decision, ride.flags, ride.decision_ms = (
                                data["decision"],
                                tuple(data["flags"]),
                                elapsed,
                            )
                rides.append(ride)
        return WebDemo(rides, unauthenticated)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _event(ride_id: str, row) -> dict:
    return {
        "ride_id": ride_id,
        "ride": {
            "PULocationID": int(row.PULocationID),
            "DOLocationID": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "lpep_pickup_datetime": row.lpep_pickup_datetime.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    }


def format_web_demo(demo: WebDemo) -> list[str]:
    lines = [
        "",
        "combined mode: the web service (API key; without one: "
        f"{demo.unauthenticated_status}), rides sent with consent, answers as server-sent events",
        f"{'ride':>7}  {'quick answer':>22}  {'enhanced answer (stream)':>28}  {'real':>5}  decision",
    ]
    for r in demo.rides:
        quick = f"{r.quick:5.1f} min in {r.quick_ms:5.0f} ms" if r.quick is not None else "-"
        enhanced = f"{r.enhanced:5.1f} min after {r.enhanced_ms:6.0f} ms" if r.enhanced is not None else "(timed out)"
        decision = (
            f"{r.decision} after {r.decision_ms:.0f} ms" + (f" ({', '.join(r.flags)})" if r.flags else "")
            if r.decision
            else "(timed out)"
        )
        lines.append(f"{r.ride_id:>7}  {quick:>22}  {enhanced:>28}  {r.actual:5.1f}  {decision}")
    if demo.rides:
        lines.append(f"  quick model {demo.rides[0].quick_model}; enhanced model {demo.rides[0].enhanced_model or '-'}")
    return lines
