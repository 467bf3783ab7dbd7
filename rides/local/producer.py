"""`rides produce`: real TLC rides as ride events, with PutRecords or put_record, at a rate."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd

from rides.stream.events import json_bytes
from rides.stream.publish import KinesisPublisher


def ride_events(frame: pd.DataFrame, *, first_id: int = 1) -> Iterator[tuple[str, bytes]]:
    """(partition key, data) for each trip, in the ride event contract."""
    pickup = frame["lpep_pickup_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()
    passengers = frame["passenger_count"].tolist() if "passenger_count" in frame else [None] * len(frame)
    for offset, (pu, do, dist, when, count) in enumerate(
        zip(
            frame["PULocationID"].tolist(),
            frame["DOLocationID"].tolist(),
            frame["trip_distance"].tolist(),
            pickup,
            passengers,
            strict=True,
        )
    ):
        ride_id = first_id + offset
        ride = {"PULocationID": pu, "DOLocationID": do, "trip_distance": dist, "lpep_pickup_datetime": when}
        if count is not None and count == count:  # NaN != NaN: leave unknown counts out
            ride["passenger_count"] = int(count)
        yield str(ride_id), json_bytes({"ride_id": ride_id, "ride": ride})


@dataclass
class ProduceResult:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def produce(
    kinesis,
    stream_name: str,
    events: Iterable[tuple[str, bytes]],
    *,
    rate: float | None = None,
    mode: str = "batch",
    batch_size: int = 500,
    progress: bool = True,
    total: int | None = None,
) -> ProduceResult:
    """Send events; `rate` in records/s (None: as fast as the stream takes them)."""
    from tqdm import tqdm

    result = ProduceResult()
    publisher = KinesisPublisher(kinesis, stream_name, concurrency=1)
    started = time.monotonic()
    step = 1 if mode == "single" else batch_size
    if rate:
        step = max(1, min(step, int(rate / 10) or 1))  # ~10 sends a second keeps the rate smooth
    with tqdm(total=total, unit="ev", desc=f"→ {stream_name}", disable=not progress) as bar:
        chunk: list[tuple[str, bytes]] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= step:
                _send(kinesis, stream_name, publisher, chunk, mode, result)
                bar.update(len(chunk))
                chunk = []
                if rate:
                    ahead = result.sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        if chunk:
            _send(kinesis, stream_name, publisher, chunk, mode, result)
            bar.update(len(chunk))
    result.seconds = time.monotonic() - started
    return result


def _send(kinesis, stream_name, publisher, chunk, mode, result) -> None:
    if mode == "single":
        for key, data in chunk:
            kinesis.put_record(StreamName=stream_name, PartitionKey=key, Data=data)
            result.sent += 1
        return
    outcome = publisher.publish(chunk)
    result.sent += outcome.sent
    result.failed += len(outcome.failed)
    if outcome.failed:
        raise RuntimeError(f"{len(outcome.failed)} events could not be put on {stream_name}: {outcome.errors}")
