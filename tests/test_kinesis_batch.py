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
