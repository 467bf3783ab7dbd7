"""The consumer under odd values, broken models and a deadline: one record's failure stays with
that record, a model fault is one retry of the batch (no bisection), and no call starts that
could outlast the invocation (moto Kinesis and SQS)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lambda_function import handler as handler_module
from lambda_function.handler import lambda_handler
from rides.local.reader import drain_queue
from rides.stream.consumer import ConsumerConfig, process_records
from rides.stream.deadletter import DeadLetter, DeadLetterSink
from rides.stream.model import LoadedModel
from rides.stream.publish import KinesisPublisher
from tests.helpers import FakeContext, kinesis_event, read_stream, ride

FAR_FUTURE = "9999-12-31T23:59:59-12:00"


@pytest.fixture
def stack(consumer_stack):
    return consumer_stack


def run(stack, rides, *, model=None, time_left=None, publisher=None):
    config = ConsumerConfig(model_uri=stack["uri"], predictions_stream_name="ride-predictions")
    kwargs = {"load_model": (lambda *a, **k: model)} if model is not None else {}
    return process_records(
        kinesis_event(rides)["Records"],
        config,
        publisher=publisher or KinesisPublisher(stack["kinesis"], "ride-predictions", concurrency=1),
        dead_letters=DeadLetterSink(stack["sqs"], stack["dlq"]),
        time_left=time_left,
        **kwargs,
    )


# -- one odd value ------------------------------------------------------------------------------
def test_a_pickup_time_past_year_9999_is_dead_lettered_and_its_neighbours_published(stack):
    event = kinesis_event([ride(1), ride(2, lpep_pickup_datetime=FAR_FUTURE), ride(3)])
    assert lambda_handler(event, FakeContext()) == {"batchItemFailures": []}
    assert sorted(r["prediction"]["ride_id"] for r in read_stream(stack["kinesis"], "ride-predictions")) == [1, 3]
    [letter] = drain_queue(stack["sqs"], stack["dlq"])
    assert letter["error"] == f"ride.lpep_pickup_datetime is out of range: {FAR_FUTURE!r}"
    assert letter["source"]["sequence_number"] == f"{2:056d}"


def test_any_unexpected_error_reading_a_record_dead_letters_that_record_with_its_traceback_logged(
    stack, monkeypatch, caplog
):
    from rides.stream import events

    real = events.validate_event

    def fragile(obj):
        if obj.get("ride_id") == 2:
            raise ZeroDivisionError("a bug in validation")
        return real(obj)

    monkeypatch.setattr(events, "validate_event", fragile)
    response, report = run(stack, [ride(1), ride(2), ride(3)])
    assert response == {"batchItemFailures": []}
    assert (report.published, report.dead_lettered) == (2, 1)
    [letter] = drain_queue(stack["sqs"], stack["dlq"])
    assert letter["error"] == "cannot be read: ZeroDivisionError: a bug in validation"
    [logged] = [r for r in caplog.records if r.getMessage() == "unexpected error while reading a record"]
    assert logged.exc_info[0] is ZeroDivisionError and logged.positions == [1]


def test_a_ride_that_breaks_the_feature_function_is_dead_lettered_alone(stack, monkeypatch):
    from rides.stream import consumer, features

    def fragile(events):
        if any(event.ride_id == "odd" for event in events):
            raise OverflowError("cannot convert")
        return features.features_from_events(events)

    monkeypatch.setattr(consumer, "features_from_events", fragile)
    response, _ = run(stack, [ride(1), ride("odd"), ride(3)])
    assert response == {"batchItemFailures": []}
    assert [r["prediction"]["ride_id"] for r in read_stream(stack["kinesis"], "ride-predictions")] == [1, 3]
    [letter] = drain_queue(stack["sqs"], stack["dlq"])
    assert letter["error"] == "cannot build features: OverflowError: cannot convert"


def test_the_web_service_answers_422_to_a_pickup_time_past_year_9999(onnx_model_dir):
    import asyncio

    import orjson

    from rides.stream.model import load_model
    from rides.web.service import RideService

    service = RideService(load_model(str(onnx_model_dir)))
    status, body = asyncio.run(service.answer(orjson.dumps(ride(1, lpep_pickup_datetime=FAR_FUTURE))))
    assert status == 422
    assert "out of range" in orjson.loads(body)["detail"][0]["msg"]


# -- a model that loads but cannot serve ---------------------------------------------------------
def broken_model(predict):
    return LoadedModel("s3://m", "ride-duration", "3", "onnx", (), predict)


def missing_feature(features):
    return features.matrix(("trip_distance", "a_feature_this_build_does_not_make"))


@pytest.mark.parametrize(
    "predict",
    [missing_feature, lambda f: np.array([1.0]), lambda f: (_ for _ in ()).throw(RuntimeError("ONNX input mismatch"))],
    ids=["missing feature column", "wrong number of outputs", "runtime error"],
)
def test_a_model_that_cannot_serve_reports_the_batch_for_retry_without_failing_the_function(stack, predict, caplog):
    response, report = run(stack, [ride(1), ride(2), b"junk"], model=broken_model(predict))
    # No exception (that would make Lambda bisect record by record): the valid records are
    # reported, the junk still goes where it belongs.
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{1:056d}", f"{2:056d}"]
    assert report.errors["ModelFault"] == 2 and report.dead_lettered == 1
    assert read_stream(stack["kinesis"], "ride-predictions") == []
    assert len(drain_queue(stack["sqs"], stack["dlq"])) == 1


def test_a_model_fault_is_logged_once_with_its_cause_however_many_batches_fail(stack, caplog):
    model = broken_model(missing_feature)
    for start in range(3):
        run(stack, [ride(start)], model=model)
    logged = [r for r in caplog.records if r.getMessage().startswith("ModelFault")]
    assert len(logged) == 1
    assert "a_feature_this_build_does_not_make" in logged[0].getMessage() and logged[0].exc_info


def test_a_model_directory_with_an_empty_mlmodel_is_a_model_fault_with_a_metric(stack, monkeypatch, capsys):
    stack["s3"].put_object(Bucket="rides-models-stg", Key="mlflow/2/models/m-empty/artifacts/MLmodel", Body=b"")
    monkeypatch.setenv("MODEL_URI", "s3://rides-models-stg/mlflow/2/models/m-empty/artifacts")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    response = lambda_handler(kinesis_event([ride(1), ride(2)]), FakeContext())
    assert len(response["batchItemFailures"]) == 2
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ModelFaults"' in line]
    assert emf[-1]["ModelFaults"] in (1, [1], 1.0, [1.0])


# -- the deadline -------------------------------------------------------------------------------
class CountingKinesis:
    def __init__(self):
        self.calls = 0

    def put_records(self, StreamName, Records):
        self.calls += 1
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


def test_no_put_records_call_starts_once_the_time_left_is_gone():
    kinesis = CountingKinesis()
    same_ride = [("r1", b"x")] * 1000  # one wave per record: 1,000 calls with time to spare
    result = KinesisPublisher(kinesis, "s").publish(same_ride, lambda: -1.0)
    assert kinesis.calls == 0 and result.failed == list(range(1000))
    assert result.errors == {"DeadlinePassed": 1}


def test_records_of_one_ride_stop_going_out_when_time_runs_out_and_the_rest_are_reported():
    kinesis = CountingKinesis()
    result = KinesisPublisher(kinesis, "s").publish([("r1", b"x")] * 1000, lambda: 5.0 - kinesis.calls)
    assert kinesis.calls == 5 and result.sent == 5 and result.failed == list(range(5, 1000))


def test_no_dead_letter_is_sent_once_the_time_left_is_gone(stack):
    class Refusing:
        def send_message_batch(self, **kwargs):
            pytest.fail("a call started after the deadline")

    letters = [DeadLetter("bad", "eA==", {}) for _ in range(25)]
    assert DeadLetterSink(Refusing(), "url").send(letters, lambda: 0.0) == list(range(25))


def test_every_call_of_the_lambda_clients_ends_within_the_reserve():
    from rides.stream.aws import LAMBDA_CLIENT_CONFIG, RESERVE_SECONDS

    config = LAMBDA_CLIENT_CONFIG
    attempts = config.retries["total_max_attempts"]
    assert attempts * (config.connect_timeout + config.read_timeout) < RESERVE_SECONDS
    from rides.stream import runtime

    assert runtime.RESERVE_SECONDS == RESERVE_SECONDS  # what every handler's deadline keeps back


def test_the_handler_builds_its_clients_with_the_bounded_configuration(stack):
    from rides.stream.aws import LAMBDA_CLIENT_CONFIG

    client = handler_module.function.clients.of("ride-fare-consumer-stg")["kinesis"]
    assert client.meta.config.read_timeout == LAMBDA_CLIENT_CONFIG.read_timeout
    assert client.meta.config.retries["total_max_attempts"] == 1
    # the calls name their function (CloudTrail, the local stack's request meter)
    assert "rides-function/ride-fare-consumer-stg" in client.meta.config.user_agent_extra


def test_what_the_consumer_publishes_is_what_the_decision_service_parses(stack):
    import base64

    import orjson

    from rides.stream.events import parse_prediction

    response, _ = process_records(
        kinesis_event([ride(156), ride("abc", lpep_pickup_datetime="2021-02-01T10:00:00")])["Records"],
        ConsumerConfig(model_uri=stack["uri"], dry_run=True, model_version="7"),
        publisher=None,
        dead_letters=DeadLetterSink(None, None),
    )
    for record in response["predictions"]:
        parsed = parse_prediction(base64.b64encode(orjson.dumps(record)))
        assert (parsed.ride_id, parsed.model, parsed.version, parsed.field) == (
            str(record["prediction"]["ride_id"]),
            "ride-duration",
            "7",
            "ride_duration",
        )
        assert parsed.value == record["prediction"]["ride_duration"] and parsed.source == record["source"]


def test_a_record_dead_lettered_for_its_features_is_not_also_reported_when_the_model_faults(stack, monkeypatch):
    from rides.stream import consumer, features

    def fragile(events):
        if any(event.ride_id == "odd" for event in events):
            raise OverflowError("cannot convert")
        return features.features_from_events(events)

    monkeypatch.setattr(consumer, "features_from_events", fragile)
    response, report = run(stack, [ride(1), ride("odd"), ride(3)], model=broken_model(missing_feature))
    # ride 2 is in exactly one place: the dead-letter queue, not also in batchItemFailures
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{1:056d}", f"{3:056d}"]
    assert report.errors["ModelFault"] == 2 and report.dead_lettered == 1


def test_a_bug_after_the_prediction_is_not_mistaken_for_a_model_fault(stack, monkeypatch):
    from rides.stream import consumer

    monkeypatch.setattr(consumer, "json_bytes", lambda obj: (_ for _ in ()).throw(TypeError("a bug in encoding")))
    with pytest.raises(TypeError, match="a bug in encoding"):  # a function error: Lambda retries or bisects
        run(stack, [ride(1)])
