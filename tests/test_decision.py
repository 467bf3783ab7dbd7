"""The decision service: the join under reordering and duplication, timeouts, rules, poison
records and failed publications (moto DynamoDB, Kinesis, SQS)."""

from __future__ import annotations

import boto3
import orjson
import pytest

from lambda_function import decision_handler
from rides.decision import DecisionConfig, Rule, evaluate, load_rules, parse_prediction
from rides.events import InvalidEvent
from rides.local.reader import drain_queue
from rides.local.stack import decisions_table_spec
from tests.helpers import FakeContext, kinesis_record, read_stream

FIELDS = {"ride-duration": "ride_duration", "ride-fare": "fare_amount", "ride-tip": "tip_amount"}


def prediction(ride_id, model, value, seq=1):
    return {
        "model": model,
        "version": "1",
        "prediction": {"ride_id": ride_id, FIELDS[model]: value},
        "source": {"shard_id": "shardId-000000000000", "sequence_number": str(seq)},
    }


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def service(aws, monkeypatch):
    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    aws["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    env = {
        "DECISIONS_TABLE": "ride-decisions",
        "DECISIONS_STREAM_NAME": "ride-decisions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "DECISION_TIMEOUT_SECONDS": "60",
    }
    decision_handler._resources.clear()
    clock = Clock()
    monkeypatch.setattr("rides.decision.time.time", clock)
    yield {**aws, "env": env, "dlq": dlq, "handler": decision_handler.handler_for(env), "clock": clock}
    decision_handler._resources.clear()


def send(service, predictions, start=1):
    event = {"Records": [kinesis_record(p, start + i) for i, p in enumerate(predictions)]}
    return service["handler"](event, FakeContext())


def decisions_stored(service, ride_id):
    return boto3.resource("dynamodb").Table("ride-decisions").get_item(Key={"ride_id": ride_id})["Item"]


def decisions(service):
    return read_stream(service["kinesis"], "ride-decisions")


def test_one_decision_once_all_three_predictions_arrived_in_any_order(service):
    assert send(service, [prediction("r1", "ride-tip", 2.0)]) == {"batchItemFailures": []}
    send(service, [prediction("r1", "ride-fare", 12.0), prediction("r2", "ride-fare", 30.0)], start=10)
    assert decisions(service) == []
    send(service, [prediction("r1", "ride-duration", 15.0)], start=20)
    [decision] = decisions(service)
    assert decision["ride_id"] == "r1" and decision["decision"] == "accept" and decision["complete"]
    assert decision["reason"] == "complete"
    assert decision["predictions"]["ride-fare"] == {"field": "fare_amount", "value": 12.0, "version": "1"}


def test_duplicates_are_absorbed(service):
    batch = [prediction("r1", m, v) for m, v in (("ride-duration", 10.0), ("ride-fare", 10.0), ("ride-tip", 1.0))]
    send(service, batch + batch)  # the whole batch delivered twice
    send(service, batch, start=100)  # and redelivered after a retry
    assert len(decisions(service)) == 1


def test_rules_flag_a_ride_for_review(service):
    send(
        service,
        [
            prediction("r9", "ride-duration", 50.0),
            prediction("r9", "ride-fare", 500.0),
            prediction("r9", "ride-tip", 1.0),
        ],
    )
    [decision] = decisions(service)
    assert decision["decision"] == "review"
    assert decision["flags"] == ["long_ride", "fare_per_minute_out_of_range"]


def test_timeout_decides_with_what_arrived(service):
    send(service, [prediction("slow", "ride-duration", 20.0)])
    assert service["handler"]({}, FakeContext()) == {"timed_out": 0, "published": 0, "failed": 0}
    service["clock"].now += 61
    assert service["handler"]({"source": "aws.events"}, FakeContext())["timed_out"] == 1
    [decision] = decisions(service)
    assert decision["reason"] == "timeout" and not decision["complete"]
    assert decision["not_evaluated"] == ["fare_per_minute_out_of_range", "tip_share_out_of_range"]
    # the late predictions are stored but decide nothing again
    send(service, [prediction("slow", "ride-fare", 20.0), prediction("slow", "ride-tip", 2.0)], start=50)
    assert service["handler"]({}, FakeContext())["timed_out"] == 0
    assert len(decisions(service)) == 1


def test_poison_records_go_to_the_dead_letter_queue(service):
    response = send(
        service,
        [
            b"not json",
            {"model": "ride-fare", "prediction": {"ride_id": 1}},
            {"model": "ride-fare", "prediction": {"ride_id": 1, "fare_amount": "x"}},
            prediction("ok", "ride-fare", 3.0),
        ],
    )
    assert response == {"batchItemFailures": []}
    reasons = sorted(letter["error"] for letter in drain_queue(service["sqs"], service["dlq"]))
    assert len(reasons) == 3
    assert reasons[0].startswith("bad JSON")


def test_a_failed_publication_is_retried_and_published_once(service):
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    batch = [prediction("r5", m, v) for m, v in (("ride-duration", 10.0), ("ride-fare", 10.0), ("ride-tip", 1.0))]
    response = send(service, batch)
    # every record of the ride is reported; Lambda retries from the first
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{i:056d}" for i in (1, 2, 3)]
    assert decisions_stored(service, "r5")["decision_published"] is False
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    assert send(service, batch) == {"batchItemFailures": []}
    assert len(decisions(service)) == 1
    send(service, batch, start=200)
    assert len(decisions(service)) == 1


def test_unreachable_table_reports_the_records(service, monkeypatch):
    monkeypatch.setitem(service["env"], "DECISIONS_TABLE", "no-such-table")
    response = send(service, [prediction("r1", "ride-fare", 1.0), b"junk"])
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{1:056d}"]


def test_parse_prediction_contract():
    import base64

    def b64(obj):
        return base64.b64encode(orjson.dumps(obj)).decode()

    parsed = parse_prediction(b64(prediction(156, "ride-duration", 21.3)))
    assert (parsed.ride_id, parsed.field, parsed.value) == ("156", "ride_duration", 21.3)
    with pytest.raises(InvalidEvent, match="exactly one value"):
        parse_prediction(b64({"model": "m", "prediction": {"ride_id": 1, "a": 1, "b": 2}}))


def test_rules_configuration():
    rules = load_rules('[{"flag": "short", "type": "min", "field": "ride_duration", "value": 2}]')
    assert evaluate({"ride_duration": 1.0}, rules) == (["short"], [])
    assert evaluate({}, rules) == ([], ["short"])
    with pytest.raises(ValueError, match="needs"):
        Rule(flag="x", type="ratio_range", numerator="a")
    with pytest.raises(ValueError, match="type must be"):
        Rule(flag="x", type="between")
    assert DecisionConfig.from_env({"REQUIRED_MODELS": "a, b"}).required_models == ("a", "b")
