"""The local event-source runner's failure semantics, against moto Kinesis and SQS."""

import json

import orjson
import pytest

from rides.esm import EventSourceSettings
from rides.local.runner import EventSourceRunner


@pytest.fixture
def stream(aws):
    aws["kinesis"].create_stream(StreamName="in", ShardCount=1)
    aws["kinesis"].put_records(
        StreamName="in", Records=[{"PartitionKey": str(i), "Data": orjson.dumps({"n": i})} for i in range(20)]
    )
    failures = aws["sqs"].create_queue(QueueName="failures")["QueueUrl"]
    return {**aws, "failures": failures}


class Recorder:
    """A handler that records what it saw and answers by a rule."""

    def __init__(self, rule=None):
        self.batches = []
        self.rule = rule or (lambda records: {"batchItemFailures": []})

    def __call__(self, event, context):
        assert context.get_remaining_time_in_millis() > 0
        self.batches.append(
            [orjson.loads(__import__("base64").b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]]
        )
        return self.rule(event["Records"])


def make_runner(stream, handler, tmp_path, **settings):
    return EventSourceRunner(
        "in",
        handler=handler,
        settings=EventSourceSettings(**{"maximum_batching_window_in_seconds": 0, **settings}),
        on_failure_queue_url=stream["failures"],
        checkpoint_path=tmp_path / "cp.json",
        kinesis=stream["kinesis"],
        sqs=stream["sqs"],
        poll_interval_s=0,
    )


def drain(runner, rounds=60):
    runner.discover_shards()
    for _ in range(rounds):
        runner.run_once()


def failure_messages(sqs, url):
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_event_has_the_shape_lambda_sends(stream, tmp_path):
    seen = []
    runner = make_runner(stream, lambda event, ctx: seen.append(event) or {}, tmp_path, batch_size=5)
    drain(runner, 3)
    record = seen[0]["Records"][0]
    assert set(record) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    assert set(record["kinesis"]) == {
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    }
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventID"] == f"shardId-000000000000:{record['kinesis']['sequenceNumber']}"
    assert record["eventSourceARN"].endswith(":stream/in")


def test_batches_by_size_in_order(stream, tmp_path):
    handler = Recorder()
    drain(make_runner(stream, handler, tmp_path, batch_size=8))
    assert handler.batches == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


def test_partial_failure_resumes_from_the_lowest_reported_record(stream, tmp_path):
    calls = []

    def rule(records):
        calls.append(1)
        if len(calls) == 1:  # report 7 and 5: Lambda resumes from 5
            return {
                "batchItemFailures": [
                    {"itemIdentifier": records[7]["kinesis"]["sequenceNumber"]},
                    {"itemIdentifier": records[5]["kinesis"]["sequenceNumber"]},
                ]
            }
        return {"batchItemFailures": []}

    handler = Recorder(rule)
    drain(make_runner(stream, handler, tmp_path, batch_size=10))
    assert handler.batches[0] == list(range(10))
    assert handler.batches[1][0] == 5
    assert sorted(set(sum(handler.batches, []))) == list(range(20))


def test_unknown_item_identifier_fails_the_whole_batch(stream, tmp_path):
    answers = iter([{"batchItemFailures": [{"itemIdentifier": "nope"}]}])
    handler = Recorder(lambda records: next(answers, {"batchItemFailures": []}))
    drain(make_runner(stream, handler, tmp_path, batch_size=10, bisect_batch_on_function_error=False))
    assert handler.batches[:2] == [list(range(10)), list(range(10))]


def test_function_error_bisects_until_the_poison_record_is_alone_then_discards_it(stream, tmp_path):
    def rule(records):
        if any(b'"n":13' in __import__("base64").b64decode(r["kinesis"]["data"]) for r in records):
            raise RuntimeError("poison")
        return {"batchItemFailures": []}

    handler = Recorder(rule)
    runner = make_runner(stream, handler, tmp_path, batch_size=20, maximum_retry_attempts=2)
    drain(runner)
    done = [n for batch in handler.batches if 13 not in batch for n in batch]
    assert sorted(done) == [n for n in range(20) if n != 13]
    assert [13] in handler.batches  # isolated by bisection
    [message] = failure_messages(stream["sqs"], stream["failures"])
    info = message["KinesisBatchInfo"]
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["batchSize"] == 1 and info["shardId"] == "shardId-000000000000"
    assert runner.stats.discarded == 1


def test_retries_exhausted_without_bisect_sends_the_batch_to_the_destination(stream, tmp_path):
    def rule(records):
        raise RuntimeError("down")

    handler = Recorder(rule)
    runner = make_runner(
        stream, handler, tmp_path, batch_size=10, maximum_retry_attempts=1, bisect_batch_on_function_error=False
    )
    drain(runner, 4)
    assert handler.batches[:2] == [list(range(10)), list(range(10))]  # first try + one retry
    assert handler.batches[2] == list(range(10, 20))
    messages = failure_messages(stream["sqs"], stream["failures"])
    assert messages[0]["KinesisBatchInfo"]["batchSize"] == 10


def test_checkpoint_lets_a_restarted_runner_resume(stream, tmp_path):
    first = Recorder()
    runner = make_runner(stream, first, tmp_path, batch_size=8)
    runner.discover_shards()
    runner.run_once()  # one batch only, then "crash"
    assert first.batches == [list(range(8))]
    second = Recorder()
    drain(make_runner(stream, second, tmp_path, batch_size=8))
    assert second.batches[0][0] == 8
    assert sorted(sum(second.batches, [])) == list(range(8, 20))


def test_records_older_than_the_maximum_age_are_discarded(stream, tmp_path, monkeypatch):
    import time as time_module

    handler = Recorder()
    runner = make_runner(stream, handler, tmp_path, batch_size=10, maximum_record_age_in_seconds=60)
    real_time = time_module.time
    monkeypatch.setattr("rides.local.runner.time.time", lambda: real_time() + 120)
    drain(runner, 3)
    assert handler.batches == []
    messages = failure_messages(stream["sqs"], stream["failures"])
    assert messages and messages[0]["requestContext"]["condition"] == "RecordAgeExceeded"
