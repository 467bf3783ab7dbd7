"""The local event-source runner's failure semantics, against moto Kinesis and SQS."""

import json
from pathlib import Path

import orjson
import pytest

from rides.local.runner import EventSourceRunner
from rides.settings import EventSourceSettings


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


# -- parity with the event source mapping under faults ------------------------------------------
def test_an_invocation_past_the_function_timeout_is_a_function_error_and_is_retried(stream, tmp_path, caplog):
    import time as clock

    slow_once = []

    def rule(records):
        if not slow_once:
            slow_once.append(1)
            clock.sleep(1.0)  # past the 0.3 s timeout: Lambda would end this invocation
        return {"batchItemFailures": []}

    handler = Recorder(rule)
    runner = make_runner(stream, handler, tmp_path, batch_size=20, bisect_batch_on_function_error=False)
    runner.function_timeout_s = 0.3
    drain(runner, 5)
    assert runner.stats.timeouts == 1 and runner.stats.function_errors == 1
    assert handler.batches[-1] == list(range(20)) and runner.stats.records_done == 20
    assert "timed out after 0.3s" in caplog.text


class FlakyReads:
    """moto's Kinesis whose GetRecords is throttled, then answers with an expired iterator."""

    def __init__(self, kinesis, failures):
        self.kinesis, self.failures = kinesis, list(failures)

    def __getattr__(self, name):
        return getattr(self.kinesis, name)

    def get_records(self, **kwargs):
        if self.failures:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": self.failures.pop(0)}}, "GetRecords")
        return self.kinesis.get_records(**kwargs)


def test_a_failed_get_records_is_retried_with_backoff_instead_of_ending_the_runner(stream, tmp_path):
    handler = Recorder()
    runner = make_runner(stream, handler, tmp_path, batch_size=8)
    runner.kinesis = FlakyReads(
        stream["kinesis"], ["ProvisionedThroughputExceededException", "ExpiredIteratorException", "InternalFailure"]
    )
    runner.discover_shards()
    deadline = __import__("time").monotonic() + 10
    while runner.stats.records_done < 20 and __import__("time").monotonic() < deadline:
        runner.run_once()
    assert [n for batch in handler.batches for n in batch] == list(range(20))
    assert runner.stats.read_errors == 3


class ReshardedKinesis:
    """A stream after a split: a closed parent (records 1-6 of ride r) and its children
    (records 7-9 of the same ride), as Kinesis lists them. moto cannot close a parent."""

    def __init__(self, checkpoint_start="1"):
        self.shards = {
            "parent": {"range": {"StartingSequenceNumber": checkpoint_start, "EndingSequenceNumber": "6"}},
            "child-a": {"parent": "parent", "range": {"StartingSequenceNumber": "7"}},
            "child-b": {"parent": "parent", "range": {"StartingSequenceNumber": "7"}},
        }
        self.records = {"parent": list(range(1, 7)), "child-a": [7, 8, 9], "child-b": []}
        self.meta = type("Meta", (), {"region_name": "us-east-1"})()

    def describe_stream_summary(self, StreamName):
        return {"StreamDescriptionSummary": {"StreamARN": "arn:aws:kinesis:us-east-1:1:stream/in"}}

    def list_shards(self, **kwargs):
        return {
            "Shards": [
                {
                    "ShardId": sid,
                    "SequenceNumberRange": s["range"],
                    **({"ParentShardId": s["parent"]} if "parent" in s else {}),
                }
                for sid, s in self.shards.items()
            ]
        }

    def get_shard_iterator(self, StreamName, ShardId, ShardIteratorType, StartingSequenceNumber=None):
        start = 0 if StartingSequenceNumber is None else self.records[ShardId].index(int(StartingSequenceNumber)) + 1
        return {"ShardIterator": f"{ShardId}:{start}"}

    def get_records(self, ShardIterator, Limit):
        shard, position = ShardIterator.rsplit(":", 1)
        records = self.records[shard][int(position) : int(position) + min(Limit, 2)]
        end = int(position) + len(records)
        closed = shard == "parent" and end == len(self.records[shard])
        return {
            "Records": [
                {
                    "SequenceNumber": str(n),
                    "PartitionKey": "r",
                    "Data": orjson.dumps({"n": n}),
                    "ApproximateArrivalTimestamp": __import__("time").time(),
                }
                for n in records
            ],
            "NextShardIterator": None if closed else f"{shard}:{end}",
            "MillisBehindLatest": 0 if end >= len(self.records[shard]) else 1000,  # as Kinesis: behind while more wait
        }


def delivered(kinesis, batch_size: int, rounds: int, checkpoint_path: Path | None = None) -> list[int]:
    """Run a runner over `kinesis` for some rounds; → the record numbers handed to the handler."""
    handler = Recorder()
    runner = EventSourceRunner(
        "in",
        handler=handler,
        settings=EventSourceSettings(batch_size=batch_size, maximum_batching_window_in_seconds=0),
        checkpoint_path=checkpoint_path,
        kinesis=kinesis,
        poll_interval_s=0,
    )
    runner.discover_shards()
    for _ in range(rounds):
        runner.run_once()
    return [n for batch in handler.batches for n in batch]


def test_a_child_shard_is_read_only_after_its_parent_is_read_to_its_end(tmp_path):
    # ride r in order, though batches of 2 take the parent three rounds
    assert delivered(ReshardedKinesis(), 2, 20, tmp_path / "cp.json") == list(range(1, 10))


def test_a_stored_position_outside_the_shard_is_reported_loudly_and_the_shard_read_from_its_start(tmp_path, caplog):
    (tmp_path / "cp.json").write_text(json.dumps({"parent": "3"}))
    kinesis = ReshardedKinesis(checkpoint_start="4")  # a position below the shard's first record
    assert delivered(kinesis, 10, 10, tmp_path / "cp.json") == list(range(1, 10))
    assert "is outside the shard's sequence numbers 4-6" in caplog.text


def test_checkpoints_belong_to_a_stream_not_to_its_name(aws, tmp_path, monkeypatch, caplog):
    """400 rides consumed, the stream deleted and created again (a fresh emulator numbers its
    records from the start again): the new rides are all delivered, and the runner says why
    it does not use the old checkpoints."""
    monkeypatch.setenv("RIDES_HOME", str(tmp_path / "home"))
    kinesis = aws["kinesis"]

    def fill(n):
        kinesis.put_records(
            StreamName="in", Records=[{"PartitionKey": str(i), "Data": orjson.dumps({"n": i})} for i in range(n)]
        )

    def consume():
        return sorted(delivered(kinesis, 500, 10))

    kinesis.create_stream(StreamName="in", ShardCount=1)
    fill(400)
    assert consume() == list(range(400))
    kinesis.delete_stream(StreamName="in")
    __import__("time").sleep(0.01)
    kinesis.create_stream(StreamName="in", ShardCount=1)
    fill(300)
    assert consume() == list(range(300))
    assert "in was created anew" in caplog.text


# -- what the real mapping also does: the parallelization factor, the payload cap, the polling pace
def keyed_stream(aws, keys: int, per_key: int, data_size: int = 0):
    aws["kinesis"].create_stream(StreamName="in", ShardCount=1)
    records = [
        {"PartitionKey": f"ride-{k}", "Data": orjson.dumps({"key": k, "n": n, "pad": "x" * data_size})}
        for n in range(per_key)
        for k in range(keys)
    ]
    step = max(1, min(500, 4_000_000 // (data_size + 100)))  # within PutRecords' 5 MiB
    for start in range(0, len(records), step):
        aws["kinesis"].put_records(StreamName="in", Records=records[start : start + step])
    failures = aws["sqs"].create_queue(QueueName="failures")["QueueUrl"]
    return {**aws, "failures": failures}


class Concurrent:
    """Records what each invocation saw and how many ran at once."""

    def __init__(self, rule=None, pause=0.02):
        import threading

        self.lock = threading.Lock()
        self.running = self.most = 0
        self.seen: list[dict] = []
        self.events: list[dict] = []
        self.rule = rule or (lambda records: {"batchItemFailures": []})
        self.pause = pause

    def __call__(self, event, context):
        import base64
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.events.append(event)
        time.sleep(self.pause)
        try:
            answer = self.rule(event["Records"])
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            with self.lock:
                for record in event["Records"]:
                    if record["kinesis"]["sequenceNumber"] in failed:
                        break
                    self.seen.append(orjson.loads(base64.b64decode(record["kinesis"]["data"])))
            return answer
        finally:
            with self.lock:
                self.running -= 1


def test_the_parallelization_factor_runs_a_shards_batches_at_once_in_order_per_key(aws, tmp_path):
    stream = keyed_stream(aws, keys=40, per_key=10)
    handler = Concurrent()
    runner = make_runner(stream, handler, tmp_path, batch_size=20, parallelization_factor=4)
    drain(runner, 80)
    assert 1 < handler.most <= 4
    assert sorted((r["key"], r["n"]) for r in handler.seen) == [(k, n) for k in range(40) for n in range(10)]
    for key in range(40):
        assert [r["n"] for r in handler.seen if r["key"] == key] == list(range(10))
    last = aws["kinesis"].get_records(
        ShardIterator=aws["kinesis"].get_shard_iterator(
            StreamName="in", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"],
        Limit=10_000,
    )["Records"][-1]["SequenceNumber"]
    assert runner.checkpoints.get("shardId-000000000000") == last


def test_a_lane_that_fails_holds_the_shards_checkpoint_while_the_others_go_on(aws, tmp_path):
    import base64

    stream = keyed_stream(aws, keys=8, per_key=5)
    poison = {"fails": True}

    def rule(records):
        for record in records:
            body = orjson.loads(base64.b64decode(record["kinesis"]["data"]))
            if body["key"] == 3 and body["n"] == 2 and poison["fails"]:
                return {"batchItemFailures": [{"itemIdentifier": record["kinesis"]["sequenceNumber"]}]}
        return {"batchItemFailures": []}

    handler = Concurrent(rule, pause=0)
    runner = make_runner(stream, handler, tmp_path, batch_size=5, parallelization_factor=4, maximum_retry_attempts=-1)
    drain(runner, 40)
    from rides.local.shards import lane_of

    done = {(r["key"], r["n"]) for r in handler.seen}
    assert (3, 2) not in done and (3, 3) not in done  # its key waits behind it
    lane = lane_of("ride-3", 4)
    others = [k for k in range(8) if lane_of(f"ride-{k}", 4) != lane]
    assert others and {(k, n) for k in others for n in range(5)} <= done  # the other lanes went on
    stuck = runner.checkpoints.get("shardId-000000000000")
    poison["fails"] = False
    drain(runner, 40)
    assert {(r["key"], r["n"]) for r in handler.seen} == {(k, n) for k in range(8) for n in range(5)}
    assert int(runner.checkpoints.get("shardId-000000000000")) > int(stuck or 0)


def test_no_event_is_larger_than_lambdas_6_mb_payload(aws, tmp_path):
    from rides.local.runner import MAX_EVENT_BYTES

    stream = keyed_stream(aws, keys=30, per_key=1, data_size=700_000)  # ~0.93 MB of base64 each
    handler = Concurrent(pause=0)
    runner = make_runner(stream, handler, tmp_path, batch_size=100)
    drain(runner, 20)
    sizes = [len(json.dumps(event)) for event in handler.events]
    assert max(sizes) <= MAX_EVENT_BYTES < max(sizes) + 1_000_000  # full, and never over
    assert sorted(r["key"] for r in handler.seen) == list(range(30))
    assert runner.stats.payload_cuts >= 4


def test_an_idle_shard_is_read_once_a_second(aws, tmp_path):
    import time

    stream = keyed_stream(aws, keys=2, per_key=1)
    runner = make_runner(stream, Concurrent(pause=0), tmp_path, batch_size=10)
    runner.read_interval_s = 1.0
    reads = []
    real = stream["kinesis"].get_records
    runner.kinesis.get_records = lambda **kw: reads.append(time.monotonic()) or real(**kw)
    runner.discover_shards()
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        runner.run_once()
    # the read with records, the empty one after it, then one a second
    assert 3 <= len(reads) <= 5


def test_a_failing_scheduled_call_is_logged_and_the_records_still_flow(stream, tmp_path, caplog):
    """on_poll stands for what a schedule invokes (a sweep) or a promotion watcher: its failure
    is that call's failure, as on AWS, never the end of the mapping's loop."""
    from rides.local.runner import run_all

    recorder = Recorder()
    runner = make_runner(stream, recorder, tmp_path, batch_size=5)
    calls = []

    def failing_sweep():
        calls.append(1)
        raise TimeoutError("the table did not answer")

    runner.on_poll = failing_sweep
    run_all([runner], until=lambda: sum(len(b) for b in recorder.batches) >= 20 or len(calls) > 50)
    assert sum(len(b) for b in recorder.batches) == 20
    assert "TimeoutError: the table did not answer" in caplog.text
