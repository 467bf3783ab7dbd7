"""The demo's and the integration tests' views of the streams and queues (the reader itself:
rides.operate.stream_reader)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import orjson

from rides.operate.stream_reader import StreamReader


def arrival_seconds(record: dict) -> float:
    value = record["ApproximateArrivalTimestamp"]
    return value.timestamp() if isinstance(value, datetime) else float(value)


def prediction_label(body: dict) -> str:
    """A prediction's model, and its role when it is not production: "ride-duration (shadow)"."""
    role = body.get("role", "production")
    return body.get("model") if role == "production" else f"{body.get('model')} ({role})"


def collect_predictions(
    reader: StreamReader, expected: set[str], timeout: float = 120.0, models: Sequence[str] = ()
) -> dict[str, list[tuple]]:
    """Poll until every expected ride id has a prediction (from each of `models`, if given)
    or the timeout passes.

    Returns ride id → [(prediction record, arrival seconds)], duplicates included (Kinesis
    delivery is at-least-once).
    """
    by_ride: dict[str, list[tuple]] = {}
    missing = {ride: set(models) for ride in expected} if models else None
    deadline = time.monotonic() + timeout

    def done() -> bool:
        return not missing if missing is not None else expected <= by_ride.keys()

    while not done() and time.monotonic() < deadline:
        records = reader.poll()
        for record in records:
            body = orjson.loads(record["Data"])
            ride = str(body["prediction"]["ride_id"])
            by_ride.setdefault(ride, []).append((body, arrival_seconds(record)))
            if missing is not None and ride in missing:
                missing[ride].discard(prediction_label(body))
                if not missing[ride]:
                    del missing[ride]
        if not records:
            time.sleep(0.1)
    return by_ride


def collect_decisions(
    reader: StreamReader, expected: set[str], timeout: float = 120.0, arrivals: dict[str, float] | None = None
) -> dict[str, dict]:
    """Poll the decisions stream until each expected ride has its decision (first one kept;
    when to `arrivals`, ride id → when that first copy arrived on the stream)."""
    decisions: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while not expected <= decisions.keys() and time.monotonic() < deadline:
        records = reader.poll()
        for record in records:
            body = orjson.loads(record["Data"])
            ride_id = str(body["ride_id"])
            if ride_id not in decisions:
                decisions[ride_id] = body
                if arrivals is not None:
                    arrivals[ride_id] = arrival_seconds(record)
        if not records:
            time.sleep(0.1)
    return decisions


def drain_queue(sqs, queue_url: str) -> list[dict]:
    """Receive, delete and return every message body (JSON) waiting in a queue."""
    bodies: list[dict] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(orjson.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
