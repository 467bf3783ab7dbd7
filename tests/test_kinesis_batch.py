"""The batch core's bookkeeping at its edges: the deadline's boundary and the error counts the
metrics are made of."""

from __future__ import annotations

from rides.stream.kinesis_batch import Deadline, KinesisBatch
from tests.helpers import kinesis_record


def test_no_time_left_is_a_passed_deadline_and_a_moment_left_is_not():
    assert Deadline(lambda: 0.0).passed and Deadline(lambda: -1.0).passed
    assert not Deadline(lambda: 0.001).passed
    assert not Deadline(None).passed and Deadline(None)() == float("inf")


def test_each_reported_record_counts_once_under_its_first_reason():
    batch = KinesisBatch([kinesis_record({"n": i}, i + 1) for i in range(3)])
    items = batch.parse(lambda raw: raw)
    batch.report(items[:2], "ProvisionedThroughputExceededException")
    batch.report(items[:2], "ProvisionedThroughputExceededException")  # the same records again
    batch.report(items[1:], "DeadlinePassed")  # the second is already reported
    assert dict(batch.errors) == {"ProvisionedThroughputExceededException": 2, "DeadlinePassed": 1}
    assert batch.failed == 3
    assert [f["itemIdentifier"] for f in batch.response()["batchItemFailures"]] == [f"{i:056d}" for i in (1, 2, 3)]


def test_a_finished_batch_says_how_it_ended_in_counts_any_json_encoder_takes():
    """Reasons are `Failure` members in the code; in the counts they are plain text, so orjson
    (which refuses a str subclass as a key) logs them as the stdlib's json does."""
    import orjson

    from rides.stream.deadletter import DeadLetterSink
    from rides.stream.failures import Failure
    from rides.stream.kinesis_batch import BatchCounts

    batch = KinesisBatch([kinesis_record({"n": i}, i + 1) for i in range(3)] + [{"kinesis": {}}])
    items = batch.parse(lambda raw: raw)
    batch.report(items[:1], Failure.DEADLINE_PASSED)
    batch.report(items[1:2], Failure.PUBLISH_FAILED)
    outcome = batch.finish(DeadLetterSink(None, None))
    assert outcome.dead_lettered == 1 and outcome.failed == 2
    assert outcome.response == {"batchItemFailures": [{"itemIdentifier": f"{i:056d}"} for i in (1, 2)]}
    assert all(type(code) is str for code in outcome.errors)
    assert orjson.loads(orjson.dumps(outcome.errors)) == {"DeadlinePassed": 1, "PublishFailed": 1}

    report = BatchCounts(errors={"ProvisionedThroughputExceededException": 3})
    assert report.settle(outcome, besides=(Failure.PUBLISH_FAILED,)) == outcome.response
    assert report == BatchCounts(1, 2, {"ProvisionedThroughputExceededException": 3, "DeadlinePassed": 1})
    # counts the service kept itself are added to, not replaced
    report = BatchCounts(errors={"DeadlinePassed": 2})
    report.settle(outcome)
    assert report.errors == {"DeadlinePassed": 3, "PublishFailed": 1}


def test_an_unexpected_error_is_logged_once_per_cause_with_the_records_it_touched(caplog):
    """A bug hit by every record of a batch is one traceback, not thousands; another cause, or
    the same while doing something else, is its own. The records are named by position and
    sequence number, the first 20 of them, and counted."""
    import logging

    batch = KinesisBatch([kinesis_record({"n": i}, i + 1) for i in range(25)])
    items = batch.parse(lambda raw: raw)
    with caplog.at_level(logging.ERROR):
        for _ in items:
            batch.log_unexpected(LookupError("zone"), "predicting", items)  # every record, one cause
        batch.log_unexpected(LookupError("zone"), "publishing", items[:2])
        batch.log_unexpected(ValueError("zone"), "predicting", items[:1])  # another type, the same text
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in logged] == [
        "unexpected error while predicting",
        "unexpected error while publishing",
        "unexpected error while predicting",
    ]
    first = logged[0]
    assert first.exc_info[0] is LookupError and first.records == 25
    assert first.positions == [item.position for item in items[:20]]
    assert first.sequence_numbers == [f"{i:056d}" for i in range(1, 21)]
    assert (logged[1].records, logged[1].positions) == (2, [0, 1])
    assert logged[2].exc_info[0] is ValueError


def test_rides_inside_aggregated_records_are_counted_over_the_whole_batch():
    """The AggregatedUserRecords metric: every user record of every aggregate in the batch (a
    plain record is not one, nor is an aggregate that cannot be read)."""
    from rides.stream.deadletter import DeadLetterSink
    from rides.stream.kpl import aggregate

    def aggregated(n: int) -> bytes:
        return aggregate([(f"ride-{i}", b'{"n": %d}' % i) for i in range(n)])

    broken = aggregated(2)[:-1] + b"?"  # its MD5 no longer matches
    records = [aggregated(3), {"n": 9}, aggregated(2), broken]
    batch = KinesisBatch([kinesis_record(data, seq) for seq, data in enumerate(records, 1)])
    items = batch.parse(lambda raw: raw)
    assert len(items) == 3 + 1 + 2
    assert batch.finish(DeadLetterSink(None, None)).user_records == 5


class KeptLetters:
    """A dead-letter sink that keeps what it is given, and the time left it was sent with; it
    delivers all but the `undelivered` indices."""

    def __init__(self, undelivered: list[int] | None = None):
        self.letters, self.time_left, self.undelivered = [], [], undelivered or []

    def send(self, letters, time_left=None) -> list[int]:
        self.letters += letters
        self.time_left.append(time_left)
        return self.undelivered


def test_a_dead_letter_carries_its_data_as_received_and_where_it_was_read():
    """What `rides redrive --dead-letters` needs to put a record back: its data exactly as it
    came, its shard, sequence and arrival, its place in an aggregate, and the stream."""
    import base64

    import orjson

    from rides.stream.kpl import aggregate

    completions = "arn:aws:kinesis:us-east-1:123456789012:stream/ride-completions"
    records = [
        kinesis_record({"n": 1}, 1),
        kinesis_record(b"not json", 2, shard="shardId-000000000003"),
        kinesis_record(aggregate([("a", b"{}"), ("b", b"{broken")]), 3),
        {"eventSourceARN": 7},  # no kinesis object, and an ARN that is not one
        "junk",
        kinesis_record({}, 6),
    ]
    records[1]["eventSourceARN"] = completions
    records[5]["kinesis"]["data"] = 12  # data that is not base64 text: nothing to keep of it
    batch = KinesisBatch(records)
    items = batch.parse(orjson.loads)
    kept = KeptLetters()
    assert batch.finish(kept).dead_lettered == 5
    arrival = 1700000000.5
    assert [(letter.data, letter.source) for letter in kept.letters] == [
        (
            base64.b64encode(b"not json").decode(),
            {
                "shard_id": "shardId-000000000003",
                "sequence_number": f"{2:056d}",
                "approximate_arrival_timestamp": arrival,
                "stream_arn": completions,
            },
        ),
        (
            base64.b64encode(b"{broken").decode(),
            {
                "shard_id": "shardId-000000000000",
                "sequence_number": f"{3:056d}",
                "approximate_arrival_timestamp": arrival,
                "sub_sequence_number": 1,
                "stream_arn": records[0]["eventSourceARN"],
            },
        ),
        ("", {"shard_id": "", "sequence_number": None, "approximate_arrival_timestamp": None, "stream_arn": None}),
        ("", {"shard_id": "", "sequence_number": None, "approximate_arrival_timestamp": None, "stream_arn": None}),
        (
            "",
            {
                "shard_id": "shardId-000000000000",
                "sequence_number": f"{6:056d}",
                "approximate_arrival_timestamp": arrival,
                "stream_arn": records[0]["eventSourceARN"],
            },
        ),
    ]
    assert [batch.stream_name(item) for item in items] == ["ride-events", "ride-events"]
    assert [batch.stream_name(item) for item, _ in batch.letters] == [
        "ride-completions",
        "ride-events",
        "",
        "",
        "ride-events",
    ]


def test_failures_are_listed_lowest_sequence_number_first_compared_as_numbers():
    """Lambda resumes from the lowest reported sequence number: "9" comes before "10"."""
    from rides.stream.kinesis_batch import sequence_order

    records = [kinesis_record({"n": i}, 1) for i in range(3)]
    for record, seq in zip(records, ("10", "9", "100"), strict=True):
        record["kinesis"]["sequenceNumber"] = seq
    batch = KinesisBatch(records)
    batch.report(batch.parse(lambda raw: raw), "ThrottlingException")
    assert [f["itemIdentifier"] for f in batch.response()["batchItemFailures"]] == ["9", "10", "100"]
    assert sorted(["10", "x", "9"], key=sequence_order) == ["9", "10", "x"]  # digits first, as numbers


def test_dead_letters_are_sent_within_the_time_left_and_those_undelivered_are_retried():
    """A dead letter the queue did not take is not lost: its record is reported for Lambda to
    retry, under its own reason, and only those delivered count as dead-lettered."""
    batch = KinesisBatch([kinesis_record(b"not json", seq) for seq in (1, 2, 3)])
    batch.parse(lambda raw: 1 / 0)
    sink = KeptLetters(undelivered=[1])  # the second could not be delivered

    def left() -> float:
        return 1.5

    outcome = batch.finish(sink, left)
    assert len(sink.letters) == 3 and sink.time_left == [left]
    assert (outcome.dead_lettered, outcome.failed, outcome.errors) == (2, 1, {"DeadLetterUndelivered": 1})
    assert outcome.response == {"batchItemFailures": [{"itemIdentifier": f"{2:056d}"}]}


def test_a_record_without_a_sequence_number_to_retry_fails_the_whole_batch_saying_which():
    """Lambda cannot be pointed at a record without a sequence number: the batch fails as a
    function error (Lambda retries or bisects it), naming the records' positions."""
    import pytest

    records = [kinesis_record({"n": i}, i + 1) for i in range(3)]
    records[2]["kinesis"]["sequenceNumber"] = ""
    batch = KinesisBatch(records)
    batch.report(batch.parse(lambda raw: raw), "ThrottlingException")
    with pytest.raises(RuntimeError, match=r"^records at positions \[2\] have no sequence number"):
        batch.response()


def test_the_local_event_is_shaped_as_lambdas_kinesis_event():
    """The runner and `rides redrive` build what Lambda sends: the AWS documentation's example
    Kinesis event record, field for field, from the record GetRecords returned."""
    from datetime import UTC, datetime

    from rides.stream.lambda_event import kinesis_event_record

    sequence = "49590338271490256608559692538361571095921575989136588898"
    stream = "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
    got = {
        "PartitionKey": "1",
        "SequenceNumber": sequence,
        "Data": b"Hello, this is a test.",
        "ApproximateArrivalTimestamp": datetime.fromtimestamp(1545084650.987, tz=UTC),  # as boto3 returns it
    }
    record = kinesis_event_record(got, "shardId-000000000006", stream, "us-east-2")
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": sequence,
            "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/lambda-stream-consumer",
        "awsRegion": "us-east-2",
        "eventSourceARN": stream,
    }
    # a timestamp already in seconds (a record read back from a file) is kept as it is
    assert (
        kinesis_event_record({**got, "ApproximateArrivalTimestamp": 1545084650.987}, "s", stream, "r")["kinesis"][
            "approximateArrivalTimestamp"
        ]
        == 1545084650.987
    )
