"""A smoke test for a deployed (or local) stack: one ride in, its prediction out."""

from __future__ import annotations

import time
import uuid

import orjson

from rides import RidesError
from rides.local.reader import StreamReader
from rides.stream.events import json_bytes


class SmokeTestFailed(RidesError):
    pass


def smoke_test(kinesis, input_stream: str, predictions_stream: str, *, timeout: float = 120.0) -> dict:
    """Put one real-looking ride on the input stream and wait for its prediction."""
    reader = StreamReader(kinesis, predictions_stream, start="LATEST")
    reader.poll()  # take the iterators now, so the prediction cannot slip past them
    ride_id = f"smoke-{uuid.uuid4().hex[:12]}"
    event = {"ride_id": ride_id, "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}}
    kinesis.put_record(StreamName=input_stream, PartitionKey=ride_id, Data=json_bytes(event))
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for record in reader.poll():
            body = orjson.loads(record["Data"])
            if body.get("prediction", {}).get("ride_id") == ride_id:
                body["latency_s"] = round(time.monotonic() - started, 2)
                return body
        time.sleep(0.5)
    raise SmokeTestFailed(f"no prediction for {ride_id} on {predictions_stream} within {timeout:.0f}s")
