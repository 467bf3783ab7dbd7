"""Recovery: listing dead letters, re-sending them, and replaying failed batches from the stream
(moto Kinesis and SQS, the real runner and CLI)."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from click.testing import CliRunner

from rides.cli import main
from rides.local.runner import EventSourceRunner
from rides.operate import recovery
from rides.settings import EventSourceSettings
from tests.helpers import read_stream


@pytest.fixture
def stack(aws):
    aws["kinesis"].create_stream(StreamName="ride-events", ShardCount=1)
    aws["kinesis"].create_stream(StreamName="ride-predictions", ShardCount=1)
    urls = {
        name: aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
        for name in ("ride-events-dlq", "ride-events-failed-batches")
    }
    aws["kinesis"].put_records(
        StreamName="ride-events",
        Records=[{"PartitionKey": str(i), "Data": orjson.dumps({"n": i})} for i in range(20)],
    )
    return {**aws, "dlq": urls["ride-events-dlq"], "failed": urls["ride-events-failed-batches"]}


def give_up_on_everything(stack, tmp_path) -> EventSourceRunner:
    """A consumer that fails every batch until the mapping gives up: the failed-batches queue
    then holds pointers to the records, as on AWS."""

    def broken(event, context):
        raise RuntimeError("a bug, fixed later")

    runner = EventSourceRunner(
        "ride-events",
        handler=broken,
        settings=EventSourceSettings(
            batch_size=8,
            maximum_batching_window_in_seconds=0,
            maximum_retry_attempts=0,
            bisect_batch_on_function_error=False,
        ),
        on_failure_queue_url=stack["failed"],
        checkpoint_path=tmp_path / "cp.json",
        kinesis=stack["kinesis"],
        sqs=stack["sqs"],
        poll_interval_s=0,
    )
    runner.discover_shards()
    for _ in range(10):
        runner.run_once()
    return runner


class Fixed:
    """The consumer after the fix: takes every record, remembers what it saw."""

    def __init__(self, fail_first: int = 0):
        self.seen: list[int] = []
        self.fail_first = fail_first

    def __call__(self, pointer, event):
        numbers = [orjson.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]]
        if self.fail_first:
            self.fail_first -= 1
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]}
        self.seen += numbers
        return {"batchItemFailures": []}


def test_failed_batches_are_replayed_from_the_stream_in_order_and_their_pointers_deleted(stack, tmp_path):
    runner = give_up_on_everything(stack, tmp_path)
    assert runner.stats.discarded == 20
    fixed = Fixed()
    result = recovery.redrive_failed_batches(stack["sqs"], stack["kinesis"], stack["failed"], fixed, region="us-east-1")
    assert sorted(fixed.seen) == list(range(20)) and result.redriven == 3 and result.records == 20
    assert recovery.peek(stack["sqs"], stack["failed"]) == []


def test_a_batch_that_fails_again_keeps_its_pointer(stack, tmp_path):
    give_up_on_everything(stack, tmp_path)
    result = recovery.redrive_failed_batches(
        stack["sqs"], stack["kinesis"], stack["failed"], Fixed(fail_first=1), region="us-east-1"
    )
    assert result.redriven == 2 and len(result.kept) == 1 and "failed again" in result.kept[0]
    assert len(recovery.peek(stack["sqs"], stack["failed"])) == 1


def test_a_range_the_stream_no_longer_holds_is_reported_and_kept(stack):
    body = {
        "requestContext": {"functionArn": "arn:aws:lambda:us-east-1:0:function:ride-duration-consumer"},
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": "999999",
            "endSequenceNumber": "1000005",
            "batchSize": 6,
            "streamArn": "arn:aws:kinesis:us-east-1:0:stream/ride-events",
        },
    }
    stack["sqs"].send_message(QueueUrl=stack["failed"], MessageBody=json.dumps(body))
    result = recovery.redrive_failed_batches(stack["sqs"], stack["kinesis"], stack["failed"], Fixed(), region="r")
    assert result.redriven == 0 and "no longer holds 999999" in result.kept[0]


def letter(error: str, data: bytes, stream: str | None) -> str:
    source = {"shard_id": "shardId-000000000000", "sequence_number": "7"}
    if stream:
        source["stream_arn"] = f"arn:aws:kinesis:us-east-1:0:stream/{stream}"
    return json.dumps({"error": error, "data": base64.b64encode(data).decode(), "source": source})


def test_dead_letters_matching_a_reason_go_back_to_their_stream_keyed_by_ride(stack):
    ride = orjson.dumps({"ride_id": "r9", "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0}})
    prediction = orjson.dumps({"model": "ride-tip", "prediction": {"ride_id": "r9", "tip_amount": 1.0}})
    for body in (
        letter("model returned a non-finite prediction (nan)", ride, "ride-events"),
        letter("model returned a non-finite prediction (inf)", prediction, None),  # before letters named streams
        letter("bad JSON: unexpected character", b"{nope", "ride-events"),
    ):
        stack["sqs"].send_message(QueueUrl=stack["dlq"], MessageBody=body)
    result = recovery.redrive_dead_letters(
        stack["sqs"],
        stack["kinesis"],
        stack["dlq"],
        streams={"events": "ride-events", "predictions": "ride-predictions"},
        matching="non-finite",
    )
    assert result == {"sent to ride-events": 1, "sent to ride-predictions": 1, "kept (reason does not match)": 1}
    assert read_stream(stack["kinesis"], "ride-predictions") == [orjson.loads(prediction)]
    assert orjson.loads(ride) in read_stream(stack["kinesis"], "ride-events")
    [kept] = recovery.peek(stack["sqs"], stack["dlq"])
    assert kept.body["error"].startswith("bad JSON")


def test_the_dead_letters_command_counts_reasons_and_shows_each_letter(stack):
    for i in range(3):
        stack["sqs"].send_message(
            QueueUrl=stack["dlq"], MessageBody=letter(f"bad JSON: char {i}", b"{x", "ride-events")
        )
    stack["sqs"].send_message(QueueUrl=stack["dlq"], MessageBody=letter("ride_id is required", b"{}", "ride-events"))
    result = CliRunner().invoke(main, ["dead-letters"])
    assert result.exit_code == 0, result.output
    assert "4 messages in dead-letters" in result.output
    assert "3 x bad JSON" in result.output and "1 x ride_id is required" in result.output
    assert "from ride-events/shardId-000000000000 @ 7" in result.output
    # listing leaves them queued
    assert len(recovery.peek(stack["sqs"], stack["dlq"])) == 4


def test_the_redrive_command_replays_failed_batches_through_the_real_local_consumer(stack, tmp_path, monkeypatch):
    """End to end through the CLI: each failed batch goes through the consumer's own handler
    (named by the pointer's function ARN); these records are not rides, so each ends in the
    dead-letter queue with its reason and the pointers are gone: every record in one place."""
    give_up_on_everything(stack, tmp_path)
    body = recovery.peek(stack["sqs"], stack["failed"], visibility_s=0, limit=1)[0].body
    assert body["requestContext"]["functionArn"].endswith(":ride-duration-consumer")
    monkeypatch.setenv("MODEL_URI", "s3://no-such-bucket/model")
    result = CliRunner().invoke(main, ["redrive"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"redriven": 3, "records": 20, "kept": []}
    assert recovery.peek(stack["sqs"], stack["failed"]) == []
    letters = recovery.peek(stack["sqs"], stack["dlq"])
    assert len(letters) == 20 and {m.body["error"] for m in letters} == {"ride_id is required"}


def test_a_pointer_names_the_function_whether_the_mapping_called_it_or_its_alias():
    info = {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": "1",
        "endSequenceNumber": "2",
        "batchSize": 2,
        "streamArn": "arn:aws:kinesis:us-east-1:0:stream/ride-events",
    }
    for arn in (
        "arn:aws:lambda:us-east-1:0:function:ride-duration-consumer-prod",
        "arn:aws:lambda:us-east-1:0:function:ride-duration-consumer-prod:live",
    ):
        pointer = recovery.BatchPointer.from_message({"requestContext": {"functionArn": arn}, "KinesisBatchInfo": info})
        assert pointer.function_name == "ride-duration-consumer-prod"
