"""`rides produce`: real TLC rides as ride events, with PutRecords or put_record, at a rate."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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
    last_sent: dict[str, float] = field(default_factory=dict)  # stream → seconds to its last record

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


def completion_events(frame: pd.DataFrame, *, first_id: int = 1) -> Iterator[tuple[str, bytes, float]]:
    """(partition key, `ride-completed` event, the ride's real duration in seconds) for each trip:
    the ground truth a backend sends when the ride ends (rides.stream.events.completion_json)."""
    from rides.stream.events import completion_json

    dropoff = frame["lpep_dropoff_datetime"].dt.to_pydatetime().tolist()
    minutes = frame["duration"].tolist()
    fares = frame["fare_amount"].tolist() if "fare_amount" in frame else [None] * len(frame)
    tips = frame["tip_amount"].tolist() if "tip_amount" in frame else [None] * len(frame)
    for offset, (when, duration, fare, tip) in enumerate(zip(dropoff, minutes, fares, tips, strict=True)):
        ride_id = first_id + offset
        data = completion_json(
            ride_id,
            when,
            duration_minutes=duration,
            fare_amount=None if fare != fare else fare,  # NaN: unknown
            tip_amount=None if tip != tip else tip,
        )
        yield str(ride_id), data, duration * 60.0


@dataclass
class Scheduled:
    at: float  # seconds after the start
    stream: str
    key: str
    data: bytes


def schedule_rides(
    rides: list[tuple[str, bytes]],
    completions: list[tuple[str, bytes, float]],
    *,
    input_stream: str,
    completions_stream: str,
    rate: float | None,
    time_scale: float,
) -> list[Scheduled]:
    """Each ride event at its place in the rate, and its completion its real duration later,
    compressed `time_scale` times (60: a 20-minute ride completes 20 s after it started)."""
    out = []
    for i, (key, data) in enumerate(rides):
        out.append(Scheduled(i / rate if rate else 0.0, input_stream, key, data))
    started = {key: item.at for key, item in zip((k for k, _ in rides), out, strict=True)}
    for key, data, seconds in completions:
        out.append(Scheduled(started.get(key, 0.0) + seconds / time_scale, completions_stream, key, data))
    out.sort(key=lambda item: item.at)
    return out


def play(kinesis, schedule: list[Scheduled], *, progress: bool = True, sleep=time.sleep) -> ProduceResult:
    """Send the scheduled events when they are due, PutRecords per stream."""
    from tqdm import tqdm

    result = ProduceResult()
    publishers: dict[str, KinesisPublisher] = {}
    started = time.monotonic()
    position = 0
    with tqdm(total=len(schedule), unit="ev", desc="→ rides and completions", disable=not progress) as bar:
        while position < len(schedule):
            now = time.monotonic() - started
            due = []
            while position < len(schedule) and schedule[position].at <= now and len(due) < 500:
                due.append(schedule[position])
                position += 1
            if not due:
                sleep(min(0.05, max(0.0, schedule[position].at - now)))
                continue
            by_stream: dict[str, list[tuple[str, bytes]]] = {}
            for item in due:
                by_stream.setdefault(item.stream, []).append((item.key, item.data))
            for stream, chunk in by_stream.items():
                publisher = publishers.setdefault(stream, KinesisPublisher(kinesis, stream, concurrency=1))
                _send(kinesis, stream, publisher, chunk, "batch", result)
                result.last_sent[stream] = time.monotonic() - started
            bar.update(len(due))
    result.seconds = time.monotonic() - started
    return result
