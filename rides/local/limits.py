"""AWS's Kinesis limits, enforced by the embedded emulator in front of moto.

What passes locally should be what AWS accepts: moto stores a 2 MiB PutRecord, any number of
writes a second per shard and any number of reads; LocalStack does the same. AWS refuses or
throttles each (Kinesis developer guide, "Quotas and limits"; API reference, PutRecord(s),
GetRecords, UpdateMaxRecordSize):

- a record (data + partition key) over the stream's maximum record size: 1 MiB by default, up
  to 10 MiB per stream (CreateStream's `MaxRecordSizeInKiB`, UpdateMaxRecordSize) →
  ValidationException, the whole call;
- PutRecords with more than 500 records → ValidationException; more than 5 MiB in all →
  InvalidArgumentException ("Records size exceeds 5 MB limit"). AWS raised the request size to
  10 MiB together with large records; the API reference still says 5 MiB, so a stream with the
  default 1 MiB records is held to 5 MiB and one with large records to 10 MiB;
- a shard takes 1,000 records/s and 1 MiB/s of writes: past that, PutRecords fails those
  entries with ProvisionedThroughputExceededException and stores the rest, PutRecord fails
  the call. The byte budget holds a burst of one maximum-size record (AWS's large records
  "tank");
- a shard answers 5 GetRecords calls/s, shared by every polling reader (the reason enhanced
  fan-out exists): past that, ProvisionedThroughputExceededException.

Rates are token buckets refilled continuously, each holding one second's worth. Off with
`rides stack up --no-aws-limits` (RIDES_AWS_LIMITS=off), e.g. to measure our own code's speed
with the emulator's limits out of the way.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MIB = 1024 * 1024
DEFAULT_MAX_RECORD_KIB = 1024
MAX_RECORD_KIB_RANGE = (1024, 10240)
MAX_RECORDS_PER_PUT = 500
SHARD_WRITE_RECORDS_PER_S = 1000
SHARD_WRITE_BYTES_PER_S = MIB
SHARD_READS_PER_S = 5

TARGET = "Kinesis_20131202."


class Refused(Exception):
    """The whole call is refused: (HTTP status, AWS error code, message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class TokenBucket:
    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]):
        self.rate, self.capacity, self.clock = rate, capacity, clock
        self.tokens = capacity
        self.at = clock()

    def take(self, amount: float) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if amount > self.tokens:
            return False
        self.tokens -= amount
        return True


@dataclass
class ShardBudget:
    records: TokenBucket
    bytes: TokenBucket
    reads: TokenBucket


@dataclass
class Verdict:
    """What to do with a PutRecords call: entries to fail (index → code, message), the rest
    go to moto."""

    failed: dict[int, tuple[str, str]]


class KinesisLimits:
    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.clock = clock
        self.max_record_kib: dict[str, int] = {}  # stream name → its maximum record size
        self.budgets: dict[tuple[str, str], ShardBudget] = {}
        self.counts: dict[str, int] = {}  # what was refused or throttled, for tests and reports
        self.lock = threading.Lock()

    # -- bookkeeping ------------------------------------------------------------------------------
    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def max_record_bytes(self, stream: str) -> int:
        return self.max_record_kib.get(stream, DEFAULT_MAX_RECORD_KIB) * 1024

    def _budget(self, stream: str, shard: str) -> ShardBudget:
        key = (stream, shard)
        budget = self.budgets.get(key)
        if budget is None:
            burst = max(SHARD_WRITE_BYTES_PER_S, self.max_record_bytes(stream))
            budget = self.budgets[key] = ShardBudget(
                TokenBucket(SHARD_WRITE_RECORDS_PER_S, SHARD_WRITE_RECORDS_PER_S, self.clock),
                TokenBucket(SHARD_WRITE_BYTES_PER_S, burst, self.clock),
                TokenBucket(SHARD_READS_PER_S, SHARD_READS_PER_S, self.clock),
            )
        return budget

    def _writable(self, stream: str, shard: str, size: int) -> bool:
        budget = self._budget(stream, shard)
        # Check both before taking either: a refused record costs nothing.
        now_records = budget.records.take(1)
        if not now_records:
            return False
        if not budget.bytes.take(size):
            budget.records.tokens += 1
            return False
        return True

    # -- the calls --------------------------------------------------------------------------------
    def stream_created(self, request: dict) -> None:
        kib = request.get("MaxRecordSizeInKiB")
        stream = request.get("StreamName", "")
        if kib is not None:
            self._check_kib(kib)
        with self.lock:
            self.forget(stream)
            if kib is not None:
                self.max_record_kib[stream] = int(kib)

    def update_max_record_size(self, stream: str, kib) -> None:
        self._check_kib(kib)
        with self.lock:
            self.max_record_kib[stream] = int(kib)
            self.forget(stream, keep_size=True)  # the byte budgets hold one maximum record

    def forget(self, stream: str, *, keep_size: bool = False) -> None:
        """A stream deleted (or resized): its budgets go, and its record size unless kept."""
        for key in [key for key in self.budgets if key[0] == stream]:
            del self.budgets[key]
        if not keep_size:
            self.max_record_kib.pop(stream, None)

    @staticmethod
    def _check_kib(kib) -> None:
        low, high = MAX_RECORD_KIB_RANGE
        if not isinstance(kib, int) or not low <= kib <= high:
            raise Refused(
                400,
                "ValidationException",
                f"1 validation error detected: Value '{kib}' at 'maxRecordSizeInKiB' failed to satisfy "
                f"constraint: Member must have value between {low} and {high}",
            )

    def _record_size(self, record: dict) -> int:
        data = record.get("Data") or ""
        try:
            size = len(base64.b64decode(data, validate=True))
        except ValueError:
            size = len(str(data).encode())
        return size + len(str(record.get("PartitionKey") or "").encode())

    def put_record(self, stream: str, request: dict, shard_of: Callable[[dict], str | None]) -> None:
        """Raises Refused for a record AWS would refuse or throttle."""
        if not self.enabled:
            return
        size = self._record_size(request)
        limit = self.max_record_bytes(stream)
        with self.lock:
            if size > limit:
                self._count("record_too_large")
                raise Refused(
                    400,
                    "ValidationException",
                    "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must have "
                    f"length less than or equal to {limit}",
                )
            shard = shard_of(request)
            if shard is not None and not self._writable(stream, shard, size):
                self._count("throttled_records")
                raise Refused(400, "ProvisionedThroughputExceededException", self._rate_message(stream, shard))

    def put_records(self, stream: str, request: dict, shard_of: Callable[[dict], str | None]) -> Verdict:
        if not self.enabled:
            return Verdict({})
        records = request.get("Records") or []
        limit = self.max_record_bytes(stream)
        request_limit = 5 * MIB if limit <= MIB else 10 * MIB
        sizes = [self._record_size(r) for r in records]
        with self.lock:
            if len(records) > MAX_RECORDS_PER_PUT:
                self._count("put_records_too_many")
                raise Refused(
                    400,
                    "ValidationException",
                    "1 validation error detected: Value at 'records' failed to satisfy constraint: Member must "
                    f"have length less than or equal to {MAX_RECORDS_PER_PUT}",
                )
            if sum(sizes) > request_limit:
                self._count("put_records_too_large")
                raise Refused(400, "InvalidArgumentException", f"Records size exceeds {request_limit // MIB} MB limit")
            for position, size in enumerate(sizes, 1):
                if size > limit:
                    self._count("record_too_large")
                    raise Refused(
                        400,
                        "ValidationException",
                        f"1 validation error detected: Value at 'records.{position}.member.data' failed to satisfy "
                        f"constraint: Member must have length less than or equal to {limit}",
                    )
            failed = {}
            for i, (record, size) in enumerate(zip(records, sizes, strict=True)):
                shard = shard_of(record)
                if shard is not None and not self._writable(stream, shard, size):
                    failed[i] = ("ProvisionedThroughputExceededException", self._rate_message(stream, shard))
            if failed:
                self._count("throttled_records", len(failed))
        return Verdict(failed)

    def get_records(self, stream: str, shard: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            if not self._budget(stream, shard).reads.take(1):
                self._count("throttled_reads")
                raise Refused(
                    400,
                    "ProvisionedThroughputExceededException",
                    f"Rate exceeded for Shard - {shard} in stream {stream}: more than "
                    f"{SHARD_READS_PER_S} GetRecords calls per second",
                )

    @staticmethod
    def _rate_message(stream: str, shard: str) -> str:
        return f"Rate exceeded for shard {shard} in stream {stream}."


def shard_iterator_parts(iterator: str) -> tuple[str, str] | None:
    """(stream, shard) of one of moto's shard iterators (base64 of "stream:shard:sequence")."""
    try:
        stream, shard, _ = base64.b64decode(iterator).decode().split(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return stream, shard


def body_json(raw: bytes) -> dict:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
