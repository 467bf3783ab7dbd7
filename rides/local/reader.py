"""Read every shard of a stream: `rides tail`, the demo summary and the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import orjson

from rides.stream.kpl import expand


class StreamReader:
    def __init__(self, kinesis, stream_name: str, *, start: str = "TRIM_HORIZON"):
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.start = start
        self.iterators: dict[str, str | None] = {}

    def _discover(self) -> None:
        for page in self.kinesis.get_paginator("list_shards").paginate(StreamName=self.stream_name):
            for shard in page["Shards"]:
                if shard["ShardId"] not in self.iterators:
                    self.iterators[shard["ShardId"]] = self.kinesis.get_shard_iterator(
                        StreamName=self.stream_name, ShardId=shard["ShardId"], ShardIteratorType=self.start
                    )["ShardIterator"]

    def poll(self) -> list[dict]:
        """One GetRecords round over all shards."""
        if not self.iterators:
            self._discover()
        records: list[dict] = []
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None:
                continue
            response = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            self.iterators[shard_id] = response.get("NextShardIterator")
            for record in response["Records"]:
                record["ShardId"] = shard_id
            records.extend(expand(response["Records"]))  # KPL aggregates: their rides, one by one
        return records

    def follow(self, *, until: Callable[[], bool] | None = None, idle_s: float = 0.2) -> Iterator[dict]:
        while not (until and until()):
            records = self.poll()
            yield from records
            if not records:
                time.sleep(idle_s)

    def read_all(self, expected: int, timeout: float = 60.0) -> list[dict]:
        """Poll until `expected` records arrived or the timeout passed."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            records = self.poll()
            got.extend(records)
            if not records:
                time.sleep(0.1)
        return got


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
