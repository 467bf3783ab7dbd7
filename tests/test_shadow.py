"""The shadow challenger: its predictions are marked, decisions never use them, and the
production predictions' contract does not change."""

from __future__ import annotations

import boto3
import pytest

from lambda_function import decision_handler
from lambda_function.handler import lambda_handler
from rides.stream.consumer import ConsumerConfig
from rides.stream.events import InvalidEvent, parse_prediction
from tests.helpers import FakeContext, kinesis_event, kinesis_record, read_stream, ride


def test_the_shadow_marks_its_predictions_and_production_records_keep_their_shape(consumer_stack, monkeypatch):
    events = kinesis_event([ride(1), ride(2, 1, 132, 17.2)])
    assert lambda_handler(events, FakeContext()) == {"batchItemFailures": []}
    monkeypatch.setenv("MODEL_ROLE", "shadow")
    monkeypatch.setenv("MODEL_VERSION", "8")
    assert lambda_handler(events, FakeContext()) == {"batchItemFailures": []}
    out = read_stream(consumer_stack["kinesis"], "ride-predictions")
    production = [r for r in out if r["version"] == "7"]
    shadow = [r for r in out if r["version"] == "8"]
    # the contract as it always was: no new key on a production record
    assert all(set(r) == {"model", "version", "prediction", "source"} for r in production)
    assert all(r["role"] == "shadow" and r["model"] == "ride-duration" for r in shadow) and len(shadow) == 2
    assert {parse_prediction_json(r).role for r in production} == {"production"}


def parse_prediction_json(record: dict):
    import base64

    import orjson

    return parse_prediction(base64.b64encode(orjson.dumps(record)))


def test_roles_are_checked():
    with pytest.raises(ValueError, match="MODEL_ROLE"):
        ConsumerConfig.from_env({"MODEL_ROLE": "canary", "DRY_RUN": "true"})
    with pytest.raises(InvalidEvent, match="role must be one of production, shadow"):
        parse_prediction_json({"model": "m", "version": "1", "role": "boss", "prediction": {"ride_id": 1, "x": 1.0}})


def test_the_decision_service_never_decides_on_a_shadow_prediction(aws):
    from rides.local.stack import decisions_table_spec

    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    aws["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    decision_handler.function.clients.clear()
    handler = decision_handler.handler_for(
        {
            "DECISIONS_TABLE": "ride-decisions",
            "DECISIONS_STREAM_NAME": "ride-decisions",
            "DECISION_TIMEOUT_SECONDS": "0",
        }
    )

    def prediction(ride_id, model, field, value, role=None):
        record = {"model": model, "version": "1", "prediction": {"ride_id": ride_id, field: value}}
        return {**record, "role": role} if role else record

    records = [
        prediction("a", "ride-duration", "ride_duration", 90.0, role="shadow"),  # would flag long_ride
        prediction("a", "ride-duration", "ride_duration", 12.0),
        prediction("a", "ride-fare", "fare_amount", 14.0),
        prediction("a", "ride-tip", "tip_amount", 2.0),
        prediction("only-shadow", "ride-duration", "ride_duration", 30.0, role="shadow"),
    ]
    try:
        response = handler({"Records": [kinesis_record(r, i + 1) for i, r in enumerate(records)]}, FakeContext())
        assert response == {"batchItemFailures": []}
        handler({"sweep": True}, FakeContext())  # the timeout is 0: anything collecting would be decided now
    finally:
        decision_handler.function.clients.clear()
    decisions = read_stream(aws["kinesis"], "ride-decisions")
    assert [d["ride_id"] for d in decisions] == ["a"]  # nothing for a ride only the shadow saw
    [decision] = decisions
    assert decision["decision"] == "accept" and decision["predictions"]["ride-duration"]["value"] == 12.0


def test_a_shadow_prediction_does_not_stand_in_for_productions_when_collecting():
    """The demo's wait: a ride is complete when production's prediction came, not the shadow's."""
    from datetime import datetime

    import orjson

    from rides.local.reader import collect_predictions

    shadow = {
        "model": "ride-duration",
        "version": "2",
        "role": "shadow",
        "prediction": {"ride_id": 1, "ride_duration": 9.0},
    }
    production = {"model": "ride-duration", "version": "1", "prediction": {"ride_id": 1, "ride_duration": 8.0}}

    class Reader:  # the shadow's record in the first poll, production's in the next
        def __init__(self):
            self.polls = [[shadow], [production]]

        def poll(self):
            bodies = self.polls.pop(0) if self.polls else []
            return [{"Data": orjson.dumps(b), "ApproximateArrivalTimestamp": datetime.now()} for b in bodies]

    seen = collect_predictions(Reader(), {"1"}, timeout=10, models=["ride-duration"])
    assert [body.get("role", "production") for body, _ in seen["1"]] == ["shadow", "production"]
