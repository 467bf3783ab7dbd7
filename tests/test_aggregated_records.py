"""Records aggregated by the Kinesis Producer Library's format, made by awslabs' reference
aggregator (`aws_kinesis_agg`), through every function that reads a stream, at its Lambda
entry point: the consumers (and so the shadow), the decision service and the evaluation."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime

import boto3
import orjson
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from lambda_function import decision_handler, evaluation_handler
from lambda_function.handler import lambda_handler
from rides.local.reader import drain_queue
from rides.local.stack import decisions_table_spec, evaluations_table_spec
from rides.stream.events import completion_json
from tests.helpers import FakeContext, kinesis_record, read_stream, ride


def aggregated(payloads: list, *, max_size: int | None = None) -> list[bytes]:
    """What a backend using aws-kinesis-agg puts on the stream: each payload a user record
    keyed by its ride id, packed by the reference aggregator."""
    aggregator = RecordAggregator(**({"max_size": max_size} if max_size else {}))
    out = []
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        key = str(orjson.loads(data).get("ride_id") or (orjson.loads(data).get("prediction") or {}).get("ride_id"))
        full = aggregator.add_user_record(key, data)
        if full is not None:
            out.append(full.get_contents()[2])
    last = aggregator.clear_and_get()
    if last is not None:
        out.append(last.get_contents()[2])
    return out


def event(records: list[bytes | dict], start: int = 1) -> dict:
    return {"Records": [kinesis_record(r, start + i, key=str(i)) for i, r in enumerate(records)]}


def seq(n: int) -> str:
    return f"{n:056d}"


# -- the consumers -------------------------------------------------------------------------------
def test_three_hundred_aggregated_rides_and_five_plain_ones_are_each_predicted_once(consumer_stack):
    parts = aggregated([ride(i) for i in range(1, 301)], max_size=5200)
    assert len(parts) == 6  # the case: 300 rides in 6 Kinesis records
    plain = [ride(1000 + i) for i in range(5)]
    response = lambda_handler(event(parts[:3] + plain + parts[3:]), FakeContext())
    assert response == {"batchItemFailures": []}

    out = read_stream(consumer_stack["kinesis"], "ride-predictions")
    assert sorted(r["prediction"]["ride_id"] for r in out) == list(range(1, 301)) + list(range(1000, 1005))
    by_ride = {r["prediction"]["ride_id"]: r for r in out}
    # each user record keeps its outer record's place and gets its own sub-sequence number
    first_of_second_part = 1 + sum(1 for _ in _users(parts[0]))
    assert by_ride[1]["source"]["sequence_number"] == seq(1)
    assert by_ride[1]["source"]["sub_sequence_number"] == 0
    assert by_ride[first_of_second_part]["source"] == {
        "shard_id": "shardId-000000000000",
        "sequence_number": seq(2),
        "approximate_arrival_timestamp": 1700000000.5,
        "sub_sequence_number": 0,
    }
    # plain records keep the contract's source exactly as before
    assert set(by_ride[1000]["source"]) == {"shard_id", "sequence_number", "approximate_arrival_timestamp"}
    assert drain_queue(consumer_stack["sqs"], consumer_stack["dlq"]) == []


def test_predictions_of_aggregated_rides_are_keyed_by_their_own_ride(consumer_stack):
    [part] = aggregated([ride(i) for i in range(1, 41)])
    lambda_handler(event([part]), FakeContext())
    keys = {}
    kinesis = consumer_stack["kinesis"]
    for shard in kinesis.list_shards(StreamName="ride-predictions")["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName="ride-predictions", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator)["Records"]:
            keys[orjson.loads(record["Data"])["prediction"]["ride_id"]] = record["PartitionKey"]
    assert keys == {i: str(i) for i in range(1, 41)}


def _users(part: bytes):
    from rides.stream.kpl import deaggregate

    return deaggregate(part)


def test_one_bad_ride_inside_an_aggregate_is_a_dead_letter_alone_and_its_siblings_are_predicted(consumer_stack):
    rides = [ride(1), ride(2, pu=999), ride(3), b'{"ride_id": 4, "ride": ', ride(5)]
    [part] = aggregated([*rides[:3], ride(4), *rides[4:]])
    # the reference aggregator needs a ride id to key by: put the broken JSON in by hand
    part = _replace_user_data(part, 3, rides[3])
    response = lambda_handler(event([ride(10), part]), FakeContext())
    assert response == {"batchItemFailures": []}
    out = read_stream(consumer_stack["kinesis"], "ride-predictions")
    assert sorted(r["prediction"]["ride_id"] for r in out) == [1, 3, 5, 10]
    letters = sorted(drain_queue(consumer_stack["sqs"], consumer_stack["dlq"]), key=lambda m: m["error"])
    assert [m["error"].split(":")[0] for m in letters] == [
        "bad JSON",
        "ride.PULocationID must be a TLC zone id 1-265, got 999",
    ]
    bad_json, bad_zone = letters
    assert base64.b64decode(bad_zone["data"]) == orjson.dumps(ride(2, pu=999))  # the user record's data alone
    assert (bad_zone["source"]["sequence_number"], bad_zone["source"]["sub_sequence_number"]) == (seq(2), 1)
    assert (bad_json["source"]["sequence_number"], bad_json["source"]["sub_sequence_number"]) == (seq(2), 3)
    assert bad_zone["source"]["stream_arn"].endswith("/ride-events")


def _replace_user_data(part: bytes, index: int, data: bytes) -> bytes:
    from rides.stream.kpl import aggregate

    users = _users(part)
    return aggregate([(u.partition_key, data if u.sub_sequence_number == index else bytes(u.data)) for u in users])


def test_a_corrupt_aggregate_is_one_dead_letter_with_its_reason_and_nothing_in_it_is_predicted(consumer_stack):
    [good] = aggregated([ride(i) for i in range(1, 11)])
    corrupt = good[:30] + bytes([good[30] ^ 0xFF]) + good[31:]
    response = lambda_handler(event([corrupt, ride(50)]), FakeContext())
    assert response == {"batchItemFailures": []}
    assert [r["prediction"]["ride_id"] for r in read_stream(consumer_stack["kinesis"], "ride-predictions")] == [50]
    [letter] = drain_queue(consumer_stack["sqs"], consumer_stack["dlq"])
    assert letter["error"] == "KPL aggregated record: aggregated record's MD5 digest does not match its contents"
    assert base64.b64decode(letter["data"]) == corrupt  # the whole record, as received
    assert letter["source"]["sequence_number"] == seq(1) and "sub_sequence_number" not in letter["source"]


def test_a_failed_user_record_reports_its_outer_record_and_the_retry_repeats_identifiable_copies(
    consumer_stack, monkeypatch
):
    from rides.stream.publish import KinesisPublisher

    parts = aggregated([ride(i) for i in range(1, 61)], max_size=1200)
    assert len(parts) >= 3
    batch = event(parts)
    real_put = KinesisPublisher._put
    throttled = {"on": True}

    def put(self, records, indices):  # ride 35's prediction is throttled until the retry
        keep = [i for i in indices if not (throttled["on"] and records[i][0] == "35")]
        got = real_put(self, records, keep) if keep else {}
        return {i: got.get(i, "ProvisionedThroughputExceededException") for i in indices}

    monkeypatch.setattr(KinesisPublisher, "_put", put)
    monkeypatch.setattr("rides.stream.retry.Backoff.wait", lambda self: False)  # give up at once
    response = lambda_handler(batch, FakeContext())
    outer = next(i for i, part in enumerate(parts) if any(u.partition_key == "35" for u in _users(part)))
    assert response == {"batchItemFailures": [{"itemIdentifier": seq(outer + 1)}]}

    # Lambda retries from that outer record: every ride in it and after it comes again
    throttled["on"] = False
    retry = {"Records": batch["Records"][outer:]}
    assert lambda_handler(retry, FakeContext()) == {"batchItemFailures": []}
    out = read_stream(consumer_stack["kinesis"], "ride-predictions")
    assert {r["prediction"]["ride_id"] for r in out} == set(range(1, 61))
    copies = Counter(
        (r["model"], r["source"]["shard_id"], r["source"]["sequence_number"], r["source"]["sub_sequence_number"])
        for r in out
    )
    # the repeats are exactly the siblings published twice, each naming the same user record
    assert len(copies) == 60
    repeated = {key for key, n in copies.items() if n > 1}
    assert all(n <= 2 for n in copies.values())
    assert {key[2] for key in repeated} <= {seq(i + 1) for i in range(outer, len(parts))}


# -- the decision service ------------------------------------------------------------------------
FIELDS = {"ride-duration": "ride_duration", "ride-fare": "fare_amount", "ride-tip": "tip_amount"}


def prediction(ride_id, model, value, sub=0):
    return {
        "model": model,
        "version": "1",
        "prediction": {"ride_id": ride_id, FIELDS[model]: value},
        "source": {"shard_id": "shardId-000000000000", "sequence_number": "9", "sub_sequence_number": sub},
    }


@pytest.fixture
def decision(aws):
    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    aws["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    env = {"DECISIONS_TABLE": "ride-decisions", "DECISIONS_STREAM_NAME": "ride-decisions", "DEAD_LETTER_QUEUE_URL": dlq}
    decision_handler.function.clients.clear()
    yield {**aws, "dlq": dlq, "handler": decision_handler.handler_for(env)}
    decision_handler.function.clients.clear()


def test_the_decision_service_gives_each_ride_of_aggregated_predictions_one_decision_id_even_when_retried(decision):
    predictions = [prediction(f"r{i}", model, 10.0 + i) for i in range(20) for model in FIELDS]
    predictions.insert(7, {"model": "ride-fare", "prediction": {"ride_id": "bad", "fare_amount": "x"}})
    parts = aggregated(predictions, max_size=2500)
    assert len(parts) > 1
    batch = event(parts)
    assert decision["handler"](batch, FakeContext()) == {"batchItemFailures": []}
    assert decision["handler"](batch, FakeContext()) == {"batchItemFailures": []}  # Lambda's retry
    out = read_stream(decision["kinesis"], "ride-decisions")
    # the retry repeats each ride's stored decision: identical copies, one decision_id per ride
    distinct = {d["decision_id"]: d for d in out}
    assert len(out) == 40 and all(distinct[d["decision_id"]] == d for d in out)
    assert sorted(d["ride_id"] for d in distinct.values()) == sorted(f"r{i}" for i in range(20))
    assert all(d["complete"] for d in out)
    letters = drain_queue(decision["sqs"], decision["dlq"])
    assert [m["error"] for m in letters] == ["prediction.fare_amount must be a finite number"] * 2  # once per delivery
    assert letters[0]["source"]["sub_sequence_number"] == 7


# -- the evaluation ------------------------------------------------------------------------------
@pytest.fixture
def evaluation(aws):
    boto3.client("dynamodb").create_table(**evaluations_table_spec("ride-evaluations"))
    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    env = {
        "EVALUATIONS_TABLE": "ride-evaluations",
        "DECISIONS_TABLE": "ride-decisions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    evaluation_handler.function.clients.clear()
    yield {**aws, "dlq": dlq, "handler": evaluation_handler.handler_for(env)}
    evaluation_handler.function.clients.clear()


def test_the_evaluation_joins_aggregated_completions_and_counts_a_retry_once(evaluation, monkeypatch):
    """Completions KPL-aggregated: each user record's place is (sequence, sub-sequence), and
    the shard's mark skips exactly the ones counted when the batch comes again."""
    from rides.stream.decision import DecisionConfig, DecisionStore
    from rides.stream.decision.service import merged
    from rides.stream.events import prediction_from

    evaluated = []
    real = evaluation_handler.process_records

    def recording(*args, **kwargs):
        response, report = real(*args, **kwargs)
        evaluated.extend(report.evaluated)
        return response, report

    monkeypatch.setattr(evaluation_handler, "process_records", recording)
    config = DecisionConfig.from_env({"REQUIRED_MODELS": "ride-duration"})
    DecisionStore(boto3.client("dynamodb"), "ride-decisions").save(
        [
            merged(
                None,
                [
                    prediction_from(
                        {
                            "model": "ride-duration",
                            "version": "1",
                            "prediction": {"ride_id": i, "ride_duration": 10.0 + i},
                        }
                    )
                ],
                0.0,
                config,
            )
            for i in range(30)
        ]
    )
    completions = [
        orjson.loads(completion_json(i, datetime(2021, 2, 3, 8, 30), duration_minutes=12.0)) for i in range(30)
    ]
    parts = aggregated(completions, max_size=1500)
    assert len(parts) > 1
    batch = event([*parts, b"junk"])
    assert evaluation["handler"](batch, FakeContext()) == {"batchItemFailures": []}
    assert evaluation["handler"](batch, FakeContext()) == {"batchItemFailures": []}  # Lambda's retry
    assert sorted((e.ride_id for e in evaluated), key=int) == [str(i) for i in range(30)]  # each ride once
    assert sorted(round(e.error, 6) for e in evaluated) == sorted(round(10.0 + i - 12.0, 6) for i in range(30))
    assert len(drain_queue(evaluation["sqs"], evaluation["dlq"])) == 2  # the junk, once per delivery


def test_a_consumer_publishing_aggregated_predictions_feeds_the_decision_service_every_one_once(
    consumer_stack, decision, monkeypatch
):
    """PUBLISH_AGGREGATED (Terraform's default): predictions go out KPL-aggregated, each on the
    shard its ride id hashes to, and the decision service reads each one once."""
    from rides.stream.kpl import MAGIC

    monkeypatch.setenv("PUBLISH_AGGREGATED", "true")
    kinesis = consumer_stack["kinesis"]
    response = lambda_handler(event([ride(i) for i in range(1, 201)]), FakeContext())
    assert response == {"batchItemFailures": []}
    stored = []
    for shard in kinesis.list_shards(StreamName="ride-predictions")["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName="ride-predictions", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        stored += kinesis.get_records(ShardIterator=iterator)["Records"]
    assert all(r["Data"][:4] == MAGIC for r in stored) and len(stored) < 5  # 200 predictions, a few records
    as_event = {"Records": [kinesis_record(r["Data"], i + 1, key=r["PartitionKey"]) for i, r in enumerate(stored)]}
    assert decision["handler"](as_event, FakeContext()) == {"batchItemFailures": []}
    from rides.stream.decision import DecisionStore

    store = DecisionStore(boto3.client("dynamodb"), "ride-decisions")
    states = store.get_many([str(i) for i in range(1, 201)])
    assert len(states) == 200 and all("ride-duration" in s.predictions for s in states.values())
    assert drain_queue(decision["sqs"], decision["dlq"]) == []  # nothing unreadable
