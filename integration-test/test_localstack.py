"""The same consumer on LocalStack, whose Lambda event source mapping is an independent
implementation of what our runner imitates. LocalStack runs in host mode (no Docker), with
the project's local executor plugin running the function on this project's Python.

Run with the integration suite (`--backend localstack` or `both`, the default).
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import replace

import boto3
import orjson
import pytest

from rides.data import read_trips
from rides.local.backend import clients
from rides.local.producer import produce, ride_events
from rides.local.reader import collect_predictions, drain_queue
from rides.local.stack import create_resources
from rides.operate.stream_reader import StreamReader
from rides.settings import EventSourceSettings, StackNames
from tests.helpers import upload_dir

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


@pytest.fixture(scope="module")
def ls_model_uri(localstack, onnx_model_dir):
    s3 = clients(localstack.env())["s3"]
    return upload_dir(s3, onnx_model_dir, "ls-models", "mlflow/1/models/m-ls/artifacts")


@pytest.fixture
def deployed(localstack, ls_model_uri, monkeypatch):
    """Fresh resources on LocalStack and a function factory wired like Terraform's."""
    from rides.local import localstack as backend

    for key, value in localstack.env().items():
        monkeypatch.setenv(key, value)
    suffix = uuid.uuid4().hex[:8]
    names = StackNames(
        input_stream=f"in-{suffix}",
        predictions_stream=f"out-{suffix}",
        decisions_stream=f"dec-{suffix}",
        dead_letter_queue=f"dlq-{suffix}",
        failed_batches_queue=f"failed-{suffix}",
        model_bucket="ls-models",
        consumer_function=f"consumer-{suffix}",
    )
    created = create_resources(localstack.env(), names, shards=1, decisions_table=False)

    def deploy(**kwargs):
        return backend.deploy_consumer(localstack, names, model_uri=ls_model_uri, model_version="1", **kwargs)

    return {
        "names": names,
        "created": created,
        "deploy": deploy,
        "kinesis": boto3.client("kinesis"),
        "sqs": boto3.client("sqs"),
        "lambda": boto3.client("lambda"),
    }


@pytest.fixture(scope="module")
def rides():
    return list(ride_events(read_trips("2021-02").head(200)))


def wait_letters(stack, n: int, timeout: float = 60) -> list[dict]:
    letters: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(letters) < n and time.monotonic() < deadline:
        letters += drain_queue(stack["sqs"], stack["created"][f"sqs:{stack['names'].dead_letter_queue}"])
        time.sleep(0.5)
    return letters


def test_full_flow_through_localstacks_event_source_mapping(deployed, rides):
    deployed["deploy"]()
    produce(deployed["kinesis"], deployed["names"].input_stream, rides, progress=False)
    by_ride = collect_predictions(
        StreamReader(deployed["kinesis"], deployed["names"].predictions_stream), {key for key, _ in rides}, 120
    )
    assert len(by_ride) == len(rides)
    [first] = by_ride["1"][:1]
    assert first[0]["version"] == "1" and first[0]["source"]["shard_id"] == "shardId-000000000000"


def test_poison_records_go_to_the_dead_letter_queue(deployed, rides):
    deployed["deploy"]()
    events = [*rides[:20], ("bad-1", b"{oops"), ("bad-2", b'{"ride_id": 1, "ride": {"PULocationID": 0}}')]
    produce(deployed["kinesis"], deployed["names"].input_stream, events, progress=False, allow_malformed=True)
    letters = wait_letters(deployed, 2)
    assert sorted(base64.b64decode(letter["data"]) for letter in letters) == sorted(data for _, data in events[20:])
    by_ride = collect_predictions(
        StreamReader(deployed["kinesis"], deployed["names"].predictions_stream), {key for key, _ in rides[:20]}, 60
    )
    assert len(by_ride) == 20


def test_partial_batch_failure_resumes_from_the_failed_record(deployed, rides):
    """The dead-letter queue is unreachable: only the poison record is reported; once the
    queue is fixed, the retried batch delivers it and nothing else is lost."""
    names = deployed["names"]
    info = deployed["deploy"](
        settings=replace(EventSourceSettings(), maximum_retry_attempts=-1),
        extra_env={"DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/000000000000/missing"},
    )
    events = [*rides[:10], ("bad", b"{oops"), *rides[10:20]]
    produce(deployed["kinesis"], names.input_stream, events, progress=False, allow_malformed=True)
    by_ride = collect_predictions(
        StreamReader(deployed["kinesis"], names.predictions_stream), {key for key, _ in rides[:20]}, 60
    )
    assert len(by_ride) == 20  # the good records went out despite the failing one
    env = {**info["env"], "DEAD_LETTER_QUEUE_URL": deployed["created"][f"sqs:{names.dead_letter_queue}"]}
    deployed["lambda"].update_function_configuration(FunctionName=info["function"], Environment={"Variables": env})
    [letter] = wait_letters(deployed, 1, timeout=90)
    assert base64.b64decode(letter["data"]) == b"{oops"


def test_missing_output_stream_records_are_retried_then_delivered(deployed, rides):
    names = deployed["names"]
    late = names.predictions_stream + "-late"
    deployed["deploy"](
        settings=replace(EventSourceSettings(), maximum_retry_attempts=-1), extra_env={"PREDICTIONS_STREAM_NAME": late}
    )
    produce(deployed["kinesis"], names.input_stream, rides[:50], progress=False)
    time.sleep(5)
    deployed["kinesis"].create_stream(StreamName=late, ShardCount=1)
    deployed["kinesis"].get_waiter("stream_exists").wait(StreamName=late, WaiterConfig={"Delay": 1})
    got = {
        str(orjson.loads(r["Data"])["prediction"]["ride_id"])
        for r in StreamReader(deployed["kinesis"], late).read_all(50, timeout=120)
    }
    assert got >= {key for key, _ in rides[:50]}
