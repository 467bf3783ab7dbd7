"""One Kinesis batch, from Lambda's event to the partial batch response.

Shared by the consumer and the decision service. `KinesisBatch` owns the bookkeeping, in the
shape of Powertools' batch processor: every record ends in exactly one of three places,

- done: its output is stored (published, or merged into the decision table);
- dead-lettered: it can never succeed (bad envelope, bad data, a value we cannot use), sent to
  the dead-letter queue with its reason;
- reported: it may succeed on a later try, named in `batchItemFailures`.

What we keep different from Powertools: the callers work on the whole batch at once (one
predict call per batch; a per-record handler would cost the consumer's fast path), so the
batch hands out the parsed records and takes back what failed, instead of calling a handler.
No exception raised while reading one record escapes that record (`parse`).

Records aggregated by the Kinesis Producer Library (rides.stream.kpl) are deaggregated here,
for every function that reads a stream: each user record is parsed, dead-lettered or reported
as if it had come alone, and keeps its outer record's position plus its sub-sequence number.
Lambda can only resume a shard from an outer record's sequence number, so reporting one user
record reports its outer record, and the siblings already done are done again on the retry
(identifiable: their source names the same sequence and sub-sequence numbers).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from rides.stream.deadletter import DeadLetter, DeadLetterSink
from rides.stream.events import InvalidEvent
from rides.stream.failures import Failure
from rides.stream.kpl import MAGIC, MAGIC_BASE64_PREFIX, AggregateError, deaggregate

log = logging.getLogger("rides.stream.batch")


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


@dataclass
class BatchCounts:
    """What every service's batch report says of how its batch ended (logged, and the
    consumer's metrics)."""

    dead_lettered: int = 0  # records sent to the dead-letter queue with their reason
    failed: int = 0  # records named in batchItemFailures (Lambda hands them back)
    errors: dict[str, int] = field(default_factory=dict)  # why records were reported → how many

    def settle(self, outcome: BatchOutcome, *, besides: Iterable[str] = ()) -> PartialBatchResponse:
        """Take the batch's ending into the report (its errors but `besides`); → Lambda's answer."""
        self.dead_lettered, self.failed = outcome.dead_lettered, outcome.failed
        left_out = set(besides)
        for code, n in outcome.errors.items():
            if code not in left_out:
                self.errors[code] = self.errors.get(code, 0) + n
        return outcome.response


@dataclass(frozen=True)
class BatchOutcome:
    """How a batch ended: Lambda's partial batch response and the counts behind it."""

    response: PartialBatchResponse
    dead_lettered: int
    failed: int
    errors: dict[str, int]
    user_records: int  # records that came inside KPL-aggregated ones


class BatchRecord:
    """What we keep of one Lambda Kinesis record (or one user record of an aggregated one):
    where it came from and its data."""

    __slots__ = ("arrival", "data", "position", "sequence_number", "shard_id", "sub_sequence_number", "value")

    def __init__(
        self,
        position: int,
        sequence_number: str | None,
        shard_id: str,
        data: Any,
        arrival: float | None,
        sub_sequence_number: int | None = None,
    ):
        self.position = position  # index of the (outer) record in the event
        self.sequence_number = sequence_number
        self.shard_id = shard_id
        # base64 text exactly as received; a user record's own bytes (encoded when needed)
        self.data = data
        self.arrival = arrival
        self.sub_sequence_number = sub_sequence_number  # its index in an aggregated record
        self.value: Any = None  # what `parse` made of the data

    def source(self) -> dict:
        source = {
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "approximate_arrival_timestamp": self.arrival,
        }
        if self.sub_sequence_number is not None:
            source["sub_sequence_number"] = self.sub_sequence_number
        return source

    def data_base64(self) -> str:
        data = self.data
        if type(data) is str:
            return data
        return base64.b64encode(data).decode("ascii") if isinstance(data, bytes | bytearray | memoryview) else ""


def read_envelope(position: int, record: Any) -> tuple[BatchRecord, str | None]:
    """The parts of a Lambda Kinesis record we need; a broken envelope is a reason, not an error."""
    # `type(x) is dict` first: an ABC isinstance check per record costs the fast path.
    kinesis = record.get("kinesis") if type(record) is dict or isinstance(record, Mapping) else None
    if type(kinesis) is not dict and not isinstance(kinesis, Mapping):
        return BatchRecord(position, None, "", "", None), "record has no kinesis object"
    event_id = record.get("eventID")
    item = BatchRecord(
        position,
        kinesis.get("sequenceNumber") or None,
        # One string per shard, not one per record: a 10,000-record batch holds them all.
        sys.intern(event_id.partition(":")[0]) if type(event_id) is str else "",
        kinesis.get("data", ""),
        kinesis.get("approximateArrivalTimestamp"),
    )
    if type(item.data) is not str or not item.data:
        return item, "record has no kinesis.data"
    return item, None


class Deadline:
    """Seconds this invocation may still spend on network calls.

    `time_left` is the Lambda's remaining time minus a reserve that covers the longest single
    call (rides.stream.aws.LAMBDA_CLIENT_CONFIG): a call started while `left() > 0` ends before the
    function's timeout, so whatever could not be done is still reported back.
    """

    def __init__(self, time_left: Callable[[], float] | None = None):
        self._time_left = time_left

    def left(self) -> float:
        return math.inf if self._time_left is None else self._time_left()

    @property
    def passed(self) -> bool:
        return self.left() <= 0

    def __call__(self) -> float:  # usable wherever a `time_left` callable is expected
        return self.left()


def as_deadline(time_left: Callable[[], float] | Deadline | None) -> Deadline:
    return time_left if isinstance(time_left, Deadline) else Deadline(time_left)


class KinesisBatch:
    """The bookkeeping of one batch: parsed, dead-lettered and reported records."""

    def __init__(self, records: Sequence[Any], *, logger: logging.Logger | Any = None):
        self.records = records
        self.log = logger or log
        self.letters: list[tuple[BatchRecord, str]] = []
        self.reported: dict[int, BatchRecord] = {}  # position → record, reported for a retry
        self.errors: Counter[str] = Counter()  # why records were reported (error code → records)
        self.dead_lettered = 0
        self.user_records = 0  # records that came inside aggregated ones
        self._logged: set[str] = set()

    # -- reading ------------------------------------------------------------------------------
    def parse(self, parse: Callable[[bytes], Any]) -> list[BatchRecord]:
        """Read every record with `parse(raw bytes)`, user records of aggregated ones each on
        their own; → the records it accepted, in stream order, with `value` set. `InvalidEvent`
        is a dead letter with its reason; any other exception too (a value that breaks our
        code breaks it every time), with its traceback logged."""
        valid: list[BatchRecord] = []
        append = valid.append
        a2b = binascii.a2b_base64
        for position, record in enumerate(self.records):
            item, problem = read_envelope(position, record)
            if problem is None:
                data = item.data
                try:
                    raw = a2b(data, strict_mode=True)
                except (binascii.Error, ValueError) as exc:
                    problem = f"bad base64: {exc}"
                else:
                    # One string comparison per plain record: the fast path pays nothing more.
                    if data.startswith(MAGIC_BASE64_PREFIX) and raw[:4] == MAGIC:
                        self._parse_aggregated(item, raw, parse, valid)
                        continue
                    problem = self._parse_one(item, raw, parse)
            if problem is None:
                append(item)
            else:
                self.letters.append((item, problem))
        return valid

    def _parse_one(self, item: BatchRecord, raw: bytes, parse: Callable[[bytes], Any]) -> str | None:
        try:
            item.value = parse(raw)
        except InvalidEvent as exc:
            return str(exc)
        except Exception as exc:
            self.log_unexpected(exc, "reading a record", [item])
            return f"cannot be read: {type(exc).__name__}: {exc}"
        return None

    def _parse_aggregated(
        self, outer: BatchRecord, raw: bytes, parse: Callable[[bytes], Any], valid: list[BatchRecord]
    ) -> None:
        """Each user record alone; an aggregate that cannot be trusted is one dead letter."""
        try:
            users = deaggregate(raw)
        except AggregateError as exc:
            self.letters.append((outer, f"KPL aggregated record: {exc}"))
            return
        self.user_records += len(users)
        for user in users:
            item = BatchRecord(
                outer.position,
                outer.sequence_number,
                outer.shard_id,
                user.data,
                outer.arrival,
                user.sub_sequence_number,
            )
            problem = self._parse_one(item, user.data, parse)
            if problem is None:
                valid.append(item)
            else:
                self.letters.append((item, problem))

    # -- outcomes -----------------------------------------------------------------------------
    def dead_letter(self, item: BatchRecord, reason: str) -> None:
        self.letters.append((item, reason))

    def report(self, items: Iterable[BatchRecord], code: str) -> None:
        """These records may succeed on a later try: name them in `batchItemFailures`."""
        for item in items:
            if item.position not in self.reported:
                self.reported[item.position] = item
                self.errors[str(code)] += 1  # plain text: a Failure member as a key breaks orjson

    def log_unexpected(self, exc: BaseException, doing: str, items: Sequence[BatchRecord] = ()) -> None:
        """The traceback of an error our code did not expect, once per batch and cause, with
        the positions of the records it touched."""
        key = f"{doing}:{type(exc).__name__}:{exc}"
        if key in self._logged:
            return
        self._logged.add(key)
        positions = [item.position for item in items[:20]]
        self.log.error(
            f"unexpected error while {doing}",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={
                "positions": positions,
                "sequence_numbers": [item.sequence_number for item in items[:20]],
                "records": len(items),
            },
        )

    def send_dead_letters(self, sink: DeadLetterSink, time_left: Callable[[], float] | None = None) -> None:
        """Deliver the dead letters; those that could not be delivered are reported instead."""
        if not self.letters:
            return
        undelivered = sink.send(
            [DeadLetter(reason, item.data_base64(), self._origin(item)) for item, reason in self.letters],
            time_left,
        )
        self.dead_lettered = len(self.letters) - len(undelivered)
        self.report((self.letters[i][0] for i in undelivered), Failure.DEAD_LETTER_UNDELIVERED)

    def stream_name(self, item: BatchRecord) -> str:
        """The name of the stream a record was read from (its event's eventSourceARN), or ""."""
        arn = self._stream_arn(item)
        return arn.rsplit("/", 1)[-1] if arn else ""

    def _origin(self, item: BatchRecord) -> dict:
        """Where a dead letter came from: its position on the stream, and the stream itself, so
        `rides redrive --dead-letters` can put it back where it was read."""
        return {**item.source(), "stream_arn": self._stream_arn(item)}

    def _stream_arn(self, item: BatchRecord) -> str | None:
        record = self.records[item.position]  # an item's position is its record's index
        arn = record.get("eventSourceARN") if isinstance(record, Mapping) else None
        return arn if isinstance(arn, str) else None

    # -- the answer ---------------------------------------------------------------------------
    def finish(self, dead_letters: DeadLetterSink, time_left: Callable[[], float] | None = None) -> BatchOutcome:
        """Deliver the dead letters (those undelivered are reported), then the batch's outcome."""
        self.send_dead_letters(dead_letters, time_left)
        return BatchOutcome(self.response(), self.dead_lettered, self.failed, dict(self.errors), self.user_records)

    def response(self) -> PartialBatchResponse:
        """Lambda resumes from the lowest reported sequence number."""
        missing = [item.position for item in self.reported.values() if not item.sequence_number]
        if missing:
            # Without a sequence number Lambda cannot be pointed at the record: fail the batch
            # (Lambda then retries or bisects it as a function error).
            raise RuntimeError(f"records at positions {missing[:10]} have no sequence number and could not be handled")
        failures = sorted({item.sequence_number for item in self.reported.values()}, key=sequence_order)
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failures]}

    @property
    def failed(self) -> int:
        return len({item.sequence_number for item in self.reported.values()})


def sequence_order(seq: str) -> tuple[int, int, str]:
    # Kinesis sequence numbers are decimal strings of up to 128 digits: compare as numbers.
    return (0, len(seq), seq) if seq.isdigit() else (1, 0, seq)
