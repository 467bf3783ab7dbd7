"""rides.producer: how a backend sends rides (and their completions) to the stream.

    from rides.producer import RideProducer

    producer = RideProducer("ride-events-prod", aggregate=True)
    report = producer.send([{"ride_id": 156, "ride": {"PULocationID": 130, "DOLocationID": 205,
                                                      "trip_distance": 3.66}}, ...])
    if report.unsent:            # nothing is dropped: what could not be sent is named
        keep_for_later(report.unsent)

What it promises:
- **A bad ride is the caller's error**, raised before anything leaves the process
  (`InvalidRide`, with every bad ride's index and reason), not a dead letter later. The same
  validator as the consumers' (rides.stream.events), so what passes here is what they accept.
- **PutRecords in calls AWS accepts** (≤ 500 records, ≤ 5 MiB, each record ≤ the stream's
  maximum), retrying only the entries that failed (throttling, a 5xx) with exponential backoff
  and full jitter, for up to `retry_seconds`.
- **Per-ride order**: a ride's next record goes out only once the one before is stored
  (rides.stream.publish), so a retried entry never lands after a later one of the same ride.
- **Aggregation** (`aggregate=True`): rides are packed in the Kinesis Producer Library's
  format (rides.stream.kpl), up to `aggregate_max_bytes` per Kinesis record (the KPL's default,
  50 KiB). A shard takes 1,000 records/s whatever their size: aggregated, it takes as many
  rides as 1 MiB/s holds. Records are grouped by the shard their own ride id hashes to (from
  ListShards, refreshed every `shard_map_seconds`), so each ride lands on the shard it would
  have alone, and all of a shard's aggregates share one partition key so that they, too, go
  out in order. The consumers deaggregate (rides.stream.kinesis_batch).
- **What could not be sent is reported**, never dropped: `SendReport.unsent` names each ride
  (its index in the input, its ride id, the error) once the retries ran out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from rides import RidesError
from rides.stream.events import InvalidEvent, completion_from, decode_json, validate_event
from rides.stream.publish import AGGREGATE_BYTES as KPL_DEFAULT_AGGREGATE_BYTES
from rides.stream.publish import MAX_BYTES_PER_RECORD, KinesisPublisher
from rides.stream.retry import Backoff


class InvalidRide(RidesError, ValueError):
    """Rides that break the event contract; nothing of the call was sent."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.problems = problems
        shown = "; ".join(f"#{index}: {reason}" for index, reason in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} invalid ride event(s), nothing sent: {shown}{more}")


@dataclass(frozen=True)
class Unsent:
    index: int  # in the input of `send`
    ride_id: str
    error: str  # the last error code, e.g. ProvisionedThroughputExceededException


@dataclass
class SendReport:
    sent: int = 0  # events stored on the stream
    kinesis_records: int = 0  # Kinesis records they took (fewer than `sent` when aggregated)
    retries: int = 0  # Kinesis records sent again after a failure
    unsent: list[Unsent] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # error code → Kinesis records
    seconds: float = 0.0

    def add(self, other: SendReport) -> None:
        self.sent += other.sent
        self.kinesis_records += other.kinesis_records
        self.retries += other.retries
        self.unsent += other.unsent
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        self.seconds += other.seconds


def _ride(event: Any) -> Any:
    return validate_event(event)


def _completion(event: Any) -> Any:
    return completion_from(event)


CONTRACTS: dict[str, Callable[[Any], Any]] = {"ride": _ride, "completion": _completion}


class RideProducer:
    def __init__(
        self,
        stream_name: str,
        *,
        kinesis=None,
        contract: str = "ride",
        aggregate: bool = False,
        aggregate_max_bytes: int = KPL_DEFAULT_AGGREGATE_BYTES,
        max_record_bytes: int = MAX_BYTES_PER_RECORD,
        retry_seconds: float = 30.0,
        max_attempts: int = 12,
        concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if contract not in CONTRACTS:
            raise ValueError(f"contract must be one of {', '.join(CONTRACTS)}")
        if aggregate and not 1024 <= aggregate_max_bytes <= max_record_bytes:
            raise ValueError(f"aggregate_max_bytes must be 1024-{max_record_bytes}")
        if kinesis is None:
            import boto3

            kinesis = boto3.client("kinesis")
        self.stream_name = stream_name
        self.kinesis = kinesis
        self.validate = CONTRACTS[contract]
        self.aggregate = aggregate
        self.aggregate_max_bytes = aggregate_max_bytes
        self.max_record_bytes = max_record_bytes
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.publisher = KinesisPublisher(
            kinesis,
            stream_name,
            concurrency=concurrency,
            backoff=self._backoff,
            aggregate=aggregate,
            aggregate_bytes=aggregate_max_bytes,
        )

    def _backoff(self, time_left=None) -> Backoff:
        return Backoff(base=0.1, cap=5.0, max_attempts=self.max_attempts, time_left=time_left, sleep=self.sleep)

    # -- the caller's side ---------------------------------------------------------------------
    def records(self, events: Sequence[Any]) -> list[tuple[str, bytes]]:
        """(partition key, data) of each event, checked against the contract; InvalidRide
        (naming every bad one) before anything is sent."""
        out: list[tuple[str, bytes]] = []
        problems: list[tuple[int, str]] = []
        for index, event in enumerate(events):
            try:
                body = decode_json(bytes(event)) if isinstance(event, bytes | bytearray | memoryview) else event
                checked = self.validate(body)
                data = bytes(event) if isinstance(event, bytes | bytearray | memoryview) else orjson.dumps(event)
            except InvalidEvent as exc:
                problems.append((index, str(exc)))
                continue
            except TypeError as exc:  # a value JSON cannot hold (a set, an object)
                problems.append((index, f"cannot be serialised as JSON: {exc}"))
                continue
            key = str(checked.ride_id)
            if len(data) + len(key.encode()) > self.max_record_bytes:
                problems.append((index, f"{len(data):,} bytes: over the stream's record limit"))
                continue
            out.append((key, data))
        if problems:
            raise InvalidRide(problems)
        return out

    def send(self, events: Sequence[Any]) -> SendReport:
        """Validate every event, then put them on the stream; → what was sent and what not."""
        started = time.monotonic()
        records = self.records(events)
        report = self._send(records)
        report.seconds = time.monotonic() - started
        return report

    # -- the stream's side ---------------------------------------------------------------------
    def _time_left(self) -> Callable[[], float]:
        deadline = time.monotonic() + self.retry_seconds
        return lambda: deadline - time.monotonic()

    def _publish(self, records: list[tuple[str, bytes]], report: SendReport) -> list[int]:
        result = self.publisher.publish(records, self._time_left())
        report.kinesis_records += result.kinesis_records
        report.retries += result.retries
        for code, n in result.errors.items():
            report.errors[code] = report.errors.get(code, 0) + n
        return result.failed

    def _last_error(self, report: SendReport) -> str:
        return max(report.errors, key=report.errors.get) if report.errors else "Unknown"

    def _send(self, records: list[tuple[str, bytes]]) -> SendReport:
        report = SendReport()
        failed = self._publish(records, report)
        report.sent = len(records) - len(failed)
        error = self._last_error(report)
        report.unsent = [Unsent(i, records[i][0], error) for i in failed]
        return report
