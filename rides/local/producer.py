"""`rides produce`: real TLC rides as ride events, at a rate, through the producer library
(rides.producer: validated, PutRecords with retries, optionally KPL-aggregated) or put_record.

The demo and the fault-injection run also put malformed events on purpose, to show where they
end up: they say so (`allow_malformed`), and those go on the stream as they are; anywhere
else a bad ride is an error before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandas as pd

from rides.producer import InvalidRide, RideProducer, SendReport
from rides.stream.events import json_bytes
from rides.stream.publish import KinesisPublisher

OPTIONAL_COLUMNS = ("passenger_count", "payment_type")  # sent where the trip record has them


def ride_events(frame: pd.DataFrame, *, first_id: int = 1) -> Iterator[tuple[str, bytes]]:
    """(partition key, data) for each trip, in the ride event contract."""
    pickup = frame["lpep_pickup_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S").tolist()
    passengers, payments = (frame[c].tolist() if c in frame else [None] * len(frame) for c in OPTIONAL_COLUMNS)
    for offset, (pu, do, dist, when, count, payment) in enumerate(
        zip(
            frame["PULocationID"].tolist(),
            frame["DOLocationID"].tolist(),
            frame["trip_distance"].tolist(),
            pickup,
            passengers,
            payments,
            strict=True,
        )
    ):
        ride_id = first_id + offset
        ride = {"PULocationID": pu, "DOLocationID": do, "trip_distance": dist, "lpep_pickup_datetime": when}
        if count is not None and count == count:  # NaN != NaN: leave unknown counts out
            ride["passenger_count"] = int(count)
        if payment is not None and payment == payment:
            ride["payment_type"] = int(payment)
        yield str(ride_id), json_bytes({"ride_id": ride_id, "ride": ride})


@dataclass
class ProduceResult:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    last_sent: dict[str, float] = field(default_factory=dict)  # stream → seconds to its last record
    kinesis_records: int = 0  # Kinesis records the events took (fewer when aggregated)
    aggregated: dict[str, int] = field(default_factory=dict)  # stream → events sent inside KPL aggregates
    records_by_stream: dict[str, int] = field(default_factory=dict)  # stream → Kinesis records put
    malformed: int = 0  # events put as they are, on purpose (allow_malformed)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Sender:
    """One stream's way out: the producer library, plain and aggregated, and (only when the
    caller allows it) a raw path for deliberately malformed events."""

    def __init__(self, kinesis, stream: str, *, contract: str = "ride", allow_malformed: bool = False):
        self.kinesis, self.stream = kinesis, stream
        self.plain = RideProducer(stream, kinesis=kinesis, contract=contract, concurrency=1)
        self.aggregating = RideProducer(stream, kinesis=kinesis, contract=contract, concurrency=1, aggregate=True)
        self.raw = KinesisPublisher(kinesis, stream, concurrency=1) if allow_malformed else None

    def send(self, chunk: list[tuple[str, bytes]], result: ProduceResult, *, aggregate: bool = False) -> None:
        events = [data for _, data in chunk]
        malformed: list[int] = []
        if self.raw is not None:
            try:
                self.plain.records(events)
            except InvalidRide as bad:
                malformed = [index for index, _ in bad.problems]
        if malformed:
            outcome = self.raw.publish([chunk[i] for i in malformed])
            result.sent += outcome.sent
            result.malformed += outcome.sent
            result.kinesis_records += outcome.sent
            result.records_by_stream[self.stream] = result.records_by_stream.get(self.stream, 0) + outcome.sent
            result.failed += len(outcome.failed)
            skip = set(malformed)
            events = [data for i, data in enumerate(events) if i not in skip]
        if not events:
            return
        report: SendReport = (self.aggregating if aggregate else self.plain).send(events)
        result.sent += report.sent
        result.kinesis_records += report.kinesis_records
        result.records_by_stream[self.stream] = result.records_by_stream.get(self.stream, 0) + report.kinesis_records
        if aggregate:
            result.aggregated[self.stream] = result.aggregated.get(self.stream, 0) + report.sent
        result.failed += len(report.unsent)
        if report.unsent:
            raise RuntimeError(
                f"{len(report.unsent)} events could not be put on {self.stream} "
                f"(first: ride {report.unsent[0].ride_id}, {report.unsent[0].error})"
            )


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
    aggregate: bool = False,
    allow_malformed: bool = False,
) -> ProduceResult:
    """Send events; `rate` in records/s (None: as fast as the stream takes them); `aggregate`:
    KPL-aggregated (mode batch)."""
    from tqdm import tqdm

    result = ProduceResult()
    sender = Sender(kinesis, stream_name, allow_malformed=allow_malformed)
    started = time.monotonic()
    step = 1 if mode == "single" else batch_size
    if rate:
        step = max(1, min(step, int(rate / 10) or 1))  # ~10 sends a second keeps the rate smooth
    with tqdm(total=total, unit="ev", desc=f"→ {stream_name}", disable=not progress) as bar:
        chunk: list[tuple[str, bytes]] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= step:
                _send(kinesis, stream_name, sender, chunk, mode, result, aggregate)
                bar.update(len(chunk))
                chunk = []
                if rate:
                    ahead = result.sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        if chunk:
            _send(kinesis, stream_name, sender, chunk, mode, result, aggregate)
            bar.update(len(chunk))
    result.seconds = time.monotonic() - started
    return result


def _send(kinesis, stream_name, sender: Sender, chunk, mode, result, aggregate: bool = False) -> None:
    if mode == "single":
        sender.plain.records([data for _, data in chunk])  # validated as the library would
        for key, data in chunk:
            kinesis.put_record(StreamName=stream_name, PartitionKey=key, Data=data)
            result.sent += 1
            result.kinesis_records += 1
        result.records_by_stream[stream_name] = result.records_by_stream.get(stream_name, 0) + len(chunk)
        return
    sender.send(chunk, result, aggregate=aggregate)


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


def play(
    kinesis,
    schedule: list[Scheduled],
    *,
    progress: bool = True,
    sleep=time.sleep,
    aggregate_share: float = 0.0,
    allow_malformed: bool = False,
    contracts: dict[str, str] | None = None,
) -> ProduceResult:
    """Send the scheduled events when they are due, through the producer library per stream.
    `aggregate_share`: that share of the sends go KPL-aggregated (the demo shows both);
    `contracts`: stream → "ride" or "completion" (default "ride")."""
    from tqdm import tqdm

    result = ProduceResult()
    senders: dict[str, Sender] = {}
    started = time.monotonic()
    position = sends = 0
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
                contract = (contracts or {}).get(stream, "ride")
                sender = senders.get(stream)
                if sender is None:
                    sender = senders[stream] = Sender(
                        kinesis, stream, contract=contract, allow_malformed=allow_malformed
                    )
                # every n-th send aggregated: both kinds interleave on the stream
                aggregate = aggregate_share > 0 and (sends * aggregate_share) % 1 + aggregate_share >= 1
                sends += 1
                sender.send(chunk, result, aggregate=aggregate)
                result.last_sent[stream] = time.monotonic() - started
            bar.update(len(due))
    result.seconds = time.monotonic() - started
    return result
