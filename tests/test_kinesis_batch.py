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
