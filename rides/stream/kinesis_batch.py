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
"""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict

from rides.stream.deadletter import DeadLetter, DeadLetterSink
from rides.stream.events import InvalidEvent

log = logging.getLogger("rides.scoring")


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


class BatchRecord:
    """What we keep of one Lambda Kinesis record: where it came from and its data."""

    __slots__ = ("arrival", "data", "position", "sequence_number", "shard_id", "value")

    def __init__(self, position: int, sequence_number: str | None, shard_id: str, data: Any, arrival: float | None):
        self.position = position  # index in the event, for logs
        self.sequence_number = sequence_number
        self.shard_id = shard_id
        self.data = data  # base64 text exactly as received
        self.arrival = arrival
        self.value: Any = None  # what `parse` made of the data

    def source(self) -> dict:
        return {
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "approximate_arrival_timestamp": self.arrival,
        }


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
        self._logged: set[str] = set()

    # -- reading ------------------------------------------------------------------------------
    def parse(self, parse: Callable[[Any], Any]) -> list[BatchRecord]:
        """Read every record with `parse(data)`; → the records it accepted, in input order, with
        `value` set. `InvalidEvent` is a dead letter with its reason; any other exception too
        (a value that breaks our code breaks it every time), with its traceback logged."""
        valid: list[BatchRecord] = []
        append = valid.append
        for position, record in enumerate(self.records):
            item, problem = read_envelope(position, record)
            if problem is None:
                try:
                    item.value = parse(item.data)
                except InvalidEvent as exc:
                    problem = str(exc)
                except Exception as exc:
                    self.log_unexpected(exc, "reading a record", [item])
                    problem = f"cannot be read: {type(exc).__name__}: {exc}"
            if problem is None:
                append(item)
            else:
                self.letters.append((item, problem))
        return valid

    # -- outcomes -----------------------------------------------------------------------------
    def dead_letter(self, item: BatchRecord, reason: str) -> None:
        self.letters.append((item, reason))

    def report(self, items: Iterable[BatchRecord], code: str) -> None:
        """These records may succeed on a later try: name them in `batchItemFailures`."""
        for item in items:
            if item.position not in self.reported:
                self.reported[item.position] = item
                self.errors[code] += 1

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
            [
                DeadLetter(reason, item.data if type(item.data) is str else "", self._origin(item))
                for item, reason in self.letters
            ],
            time_left,
        )
        self.dead_lettered = len(self.letters) - len(undelivered)
        self.report((self.letters[i][0] for i in undelivered), "DeadLetterUndelivered")

    def _origin(self, item: BatchRecord) -> dict:
        """Where a dead letter came from: its position on the stream, and the stream itself, so
        `rides redrive --dead-letters` can put it back where it was read."""
        record = self.records[item.position] if item.position < len(self.records) else None
        stream_arn = record.get("eventSourceARN") if isinstance(record, Mapping) else None
        return {**item.source(), "stream_arn": stream_arn if isinstance(stream_arn, str) else None}

    # -- the answer ---------------------------------------------------------------------------
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
