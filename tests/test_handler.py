"""The Lambda handler end to end against moto: Kinesis in, predictions out, nothing lost."""

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_function import handler as handler_module
from lambda_function.handler import lambda_handler
from rides.local.reader import drain_queue
from tests.helpers import FakeContext, kinesis_event, kinesis_record, read_stream, ride, upload_dir


@pytest.fixture
def stack(aws, onnx_model_dir, monkeypatch):
    handler_module.function.clients.clear()
    aws["kinesis"].create_stream(StreamName="ride-predictions", ShardCount=2)
    dlq = aws["sqs"].create_queue(QueueName="ride-events-dlq")["QueueUrl"]
    uri = upload_dir(aws["s3"], onnx_model_dir, "rides-models-stg", "mlflow/1/models/m-abc/artifacts")
    monkeypatch.setenv("MODEL_URI", uri)
    monkeypatch.setenv("MODEL_VERSION", "7")
    monkeypatch.setenv("PREDICTIONS_STREAM_NAME", "ride-predictions")
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dlq)
    # In-process moto loses records under concurrent PutRecords (the emulator serializes them;
    # integration-test/ covers concurrency there).
    monkeypatch.setenv("PUBLISH_CONCURRENCY", "1")
    yield {**aws, "dlq": dlq, "uri": uri}
    handler_module.function.clients.clear()


def test_publishes_one_prediction_per_ride(stack):
    response = lambda_handler(kinesis_event([ride(156), ride("abc", 1, 132, 17.2)]), FakeContext())
    assert response == {"batchItemFailures": []}
    out = sorted(read_stream(stack["kinesis"], "ride-predictions"), key=lambda r: str(r["prediction"]["ride_id"]))
    assert [r["prediction"]["ride_id"] for r in out] == [156, "abc"]
    first = out[0]
    assert first["model"] == "ride-duration" and first["version"] == "7"
    assert 1 < first["prediction"]["ride_duration"] < 60
    assert first["source"]["shard_id"] == "shardId-000000000000"
    assert first["source"]["sequence_number"] == f"{1:056d}"
    assert out[1]["prediction"]["ride_duration"] > first["prediction"]["ride_duration"]  # 17 miles to JFK


def test_bad_records_go_to_the_dead_letter_queue_and_never_fail_the_batch(stack):
    event = kinesis_event([ride(1), b"{not json", ride(2, pu=999)])
    event["Records"].append(
        {**kinesis_record(ride(3), 4), "kinesis": {**kinesis_record(ride(3), 4)["kinesis"], "data": "%%%"}}
    )
    response = lambda_handler(event, FakeContext())
    assert response["batchItemFailures"] == []
    assert len(read_stream(stack["kinesis"], "ride-predictions")) == 1
    letters = drain_queue(stack["sqs"], stack["dlq"])
    reasons = sorted(letter["error"].split(":")[0] for letter in letters)
    assert reasons == ["bad JSON", "bad base64", "ride.PULocationID must be a TLC zone id 1-265, got 999"]
    bad_json = next(letter for letter in letters if letter["error"].startswith("bad JSON"))
    assert base64.b64decode(bad_json["data"]) == b"{not json"
    assert bad_json["source"]["sequence_number"] == f"{2:056d}"


@pytest.mark.parametrize("aggregated", ["false", "true"])
def test_missing_output_stream_reports_every_valid_record(stack, monkeypatch, aggregated):
    # aggregated: the shard map's ListShards is what finds the stream missing
    monkeypatch.setenv("PUBLISH_AGGREGATED", aggregated)
    stack["kinesis"].delete_stream(StreamName="ride-predictions")
    event = kinesis_event([ride(i) for i in range(1, 6)] + [b"junk"])
    response = lambda_handler(event, FakeContext())
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{i:056d}" for i in range(1, 6)]
    assert len(drain_queue(stack["sqs"], stack["dlq"])) == 1  # the junk still went where it belongs


def test_unreachable_dead_letter_queue_reports_the_bad_records(stack, monkeypatch):
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", stack["dlq"] + "-gone")
    response = lambda_handler(kinesis_event([ride(1), b"junk", ride(2)]), FakeContext())
    assert response["batchItemFailures"] == [{"itemIdentifier": f"{2:056d}"}]
    assert len(read_stream(stack["kinesis"], "ride-predictions")) == 2


def test_without_a_queue_dead_letters_are_logged_in_full(stack, monkeypatch, caplog):
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL")
    response = lambda_handler(kinesis_event([b"junk-record"]), FakeContext())
    assert response["batchItemFailures"] == []
    [logged] = [r.dead_letter for r in caplog.records if hasattr(r, "dead_letter")]
    assert logged["data"] == base64.b64encode(b"junk-record").decode()
    assert logged["error"].startswith("bad JSON")


def test_dry_run_returns_predictions_without_publishing(stack, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    response = lambda_handler(kinesis_event([ride(1), ride(2)]), FakeContext())
    assert [p["prediction"]["ride_id"] for p in response["predictions"]] == [1, 2]
    assert read_stream(stack["kinesis"], "ride-predictions") == []


def test_ten_thousand_record_batch_with_repeated_rides_keeps_order(stack):
    rides = [ride(i % 2500, pu=1 + i % 265, distance=i / 1000) for i in range(10_000)]
    response = lambda_handler(kinesis_event(rides), FakeContext())
    assert response == {"batchItemFailures": []}
    out = read_stream(stack["kinesis"], "ride-predictions")
    assert len(out) == 10_000
    by_ride: dict = {}
    for record in out:  # a stream read returns each shard in order, and a ride lives on one shard
        by_ride.setdefault(record["prediction"]["ride_id"], []).append(int(record["source"]["sequence_number"]))
    assert all(seqs == sorted(seqs) for seqs in by_ride.values())
    assert sum(len(v) for v in by_ride.values()) == 10_000


def test_model_that_cannot_load_names_the_uri_and_retries_the_batch(stack, monkeypatch, caplog):
    monkeypatch.setenv("MODEL_URI", "s3://rides-models-stg/no/such/model")
    response = lambda_handler(kinesis_event([ride(1), ride(2)]), FakeContext())
    assert len(response["batchItemFailures"]) == 2
    assert "cannot load model from s3://rides-models-stg/no/such/model" in caplog.text


def test_warm_up_loads_the_model_the_first_batch_uses(stack, monkeypatch):
    import os

    from rides.stream import model as model_module

    assert handler_module.warm_up(os.environ)
    (loaded,) = model_module._cache.values()
    monkeypatch.setattr(model_module, "load_model", lambda *a, **k: pytest.fail("loaded twice"))
    assert lambda_handler(kinesis_event([ride(1)]), FakeContext()) == {"batchItemFailures": []}
    assert read_stream(stack["kinesis"], "ride-predictions")[0]["version"] == loaded.version == "7"


def test_warm_up_with_a_broken_model_leaves_it_to_the_first_batch(stack, monkeypatch, caplog):
    import os

    monkeypatch.setenv("MODEL_URI", "s3://rides-models-stg/no/such/model")
    assert not handler_module.warm_up(os.environ)
    assert "model not loaded at start-up" in caplog.text
    response = lambda_handler(kinesis_event([ride(1)]), FakeContext())
    assert len(response["batchItemFailures"]) == 1


def test_zoomcamp_sklearn_model_works_unchanged(stack, zoomcamp_model_dir, monkeypatch):
    uri = upload_dir(stack["s3"], zoomcamp_model_dir, "zoomcamp-models", "1/abc/artifacts/model")
    monkeypatch.setenv("MODEL_URI", uri)
    monkeypatch.delenv("MODEL_VERSION")
    response = lambda_handler(kinesis_event([ride(156)]), FakeContext())
    assert response == {"batchItemFailures": []}
    [record] = read_stream(stack["kinesis"], "ride-predictions")
    assert 1 < record["prediction"]["ride_duration"] < 60


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_random_bytes_never_escape_the_handler(stack, payloads):
    response = lambda_handler(kinesis_event(payloads), FakeContext())
    assert response["batchItemFailures"] == []


def test_a_non_finite_prediction_is_dead_lettered_and_the_rest_published_in_order(stack):
    import numpy as np

    from rides.stream.consumer import ConsumerConfig, process_records
    from rides.stream.deadletter import DeadLetterSink
    from rides.stream.model import LoadedModel
    from rides.stream.publish import KinesisPublisher

    model = LoadedModel("s3://m", "ride-duration", "3", "onnx", (), lambda f: np.array([4.0, np.inf, 6.0, np.nan]))
    config = ConsumerConfig(model_uri="s3://m", predictions_stream_name="ride-predictions")
    response, report = process_records(
        kinesis_event([ride(1), ride(2), ride(1), ride(3)])["Records"],
        config,
        publisher=KinesisPublisher(stack["kinesis"], "ride-predictions", concurrency=1),
        dead_letters=DeadLetterSink(stack["sqs"], stack["dlq"]),
        load_model=lambda *a, **k: model,
    )
    assert response == {"batchItemFailures": []}
    assert (report.predicted, report.published, report.dead_lettered) == (2, 2, 2)
    out = read_stream(stack["kinesis"], "ride-predictions")
    assert [(r["prediction"]["ride_id"], r["prediction"]["ride_duration"]) for r in out] == [(1, 4.0), (1, 6.0)]
    reasons = sorted(letter["error"] for letter in drain_queue(stack["sqs"], stack["dlq"]))
    assert reasons == ["model returned a non-finite prediction (inf)", "model returned a non-finite prediction (nan)"]


def test_in_a_lambda_container_the_model_is_loaded_and_frozen_at_init(onnx_model_dir):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import gc, json\n"
        "from lambda_function import handler\n"
        "from rides.stream import model\n"
        "print(json.dumps([len(model._cache), gc.get_freeze_count()]))\n"
    )

    def init(**env) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "DRY_RUN": "true", "MODEL_URI": str(onnx_model_dir), **env},
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    cached, frozen = init(AWS_LAMBDA_FUNCTION_NAME="ride-duration-consumer")
    assert cached == 1 and frozen > 10_000
    assert init() == [0, 0]  # anywhere else importing the handler loads nothing


def test_cycle_collection_is_paused_only_while_a_batch_is_decoded_and_resumed_after_errors():
    import gc

    from rides.stream.consumer import _cycle_collection_paused

    assert gc.isenabled()
    with _cycle_collection_paused():
        assert not gc.isenabled()
        with _cycle_collection_paused():  # another batch meanwhile: leaves it to the first
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _cycle_collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
