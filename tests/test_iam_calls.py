"""The functions' IAM policies in infra/ against the AWS calls their code really makes.

The handlers run against moto on batches that take every path (predictions published, dead
letters sent, the model read from S3; the decision service's reads, conditional writes, sweep
and publication), every botocore call is recorded, and each must be an action the function's
role allows in the Terraform. A policy that loses `kinesis:PutRecords` fails here, on this
machine, not first in AWS.
"""

from __future__ import annotations

import boto3
import botocore.client
import pytest

from rides.local.reader import drain_queue
from rides.local.stack import decisions_table_spec
from tests.helpers import FakeContext, kinesis_event, kinesis_record, ride
from tests.test_infra import INFRA, blocks_of, caller_statements, load_dir, locals_of, named

# Calls that IAM authorizes under another action's name.
AUTHORIZED_AS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:GetQueueUrl": "sqs:GetQueueUrl",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "dynamodb:BatchWriteItem": "dynamodb:BatchWriteItem",
}

TRANSACTION_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


@pytest.fixture
def recorded(monkeypatch):
    """Every AWS API call made through botocore while the test runs, as IAM actions."""
    calls: set[str] = set()
    original = botocore.client.BaseClient._make_api_call

    def record(self, operation_name, api_params):
        prefix = self.meta.service_model.metadata.get("signingName") or self.meta.service_model.endpoint_prefix
        action = f"{prefix}:{operation_name}"
        if action == "dynamodb:TransactWriteItems":  # IAM authorizes each of its items' actions
            calls.update(TRANSACTION_ITEM_ACTIONS[next(iter(item))] for item in api_params["TransactItems"])
        else:
            calls.add(AUTHORIZED_AS.get(action, action))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


def allowed_actions(function_module: dict) -> set[str]:
    """What a stream function's role may do: ../lambda_function's own statements, the stream
    function's reads, and the caller's."""
    modules = INFRA / "modules"
    own = blocks_of(modules / "lambda_function", "data")["aws_iam_policy_document"]["this"]
    actions = {a for statement in own["statement"] for a in statement["actions"]}
    actions |= {
        a for statement in locals_of(modules / "stream_function")["read_statements"] for a in statement["actions"]
    }
    return actions | {a for s in caller_statements(function_module) for a in s["actions"]}


def test_the_consumers_role_allows_every_call_the_consumer_makes(consumer_stack, recorded):
    from lambda_function import handler as handler_module

    recorded.clear()  # what the test's own set-up called does not count
    response = handler_module.lambda_handler(kinesis_event([ride(1), b"{not json", ride(2)]), FakeContext())
    assert response == {"batchItemFailures": []}
    # ... and publishing KPL-aggregated, as Terraform has it (PUBLISH_AGGREGATED)
    import os

    os.environ["PUBLISH_AGGREGATED"] = "true"
    try:
        assert handler_module.lambda_handler(kinesis_event([ride(3)], start=9), FakeContext()) == {
            "batchItemFailures": []
        }
    finally:
        del os.environ["PUBLISH_AGGREGATED"]
    assert {"kinesis:PutRecords", "kinesis:ListShards", "sqs:SendMessage", "s3:GetObject"} <= recorded

    consumer = named(load_dir(INFRA)["module"])["consumer"]
    missing = recorded - allowed_actions(consumer)
    assert not missing, f"the consumer calls {sorted(missing)}, which its role in infra/ does not allow"


def test_the_decision_services_role_allows_every_call_it_makes(aws, monkeypatch, recorded):
    from lambda_function import decision_handler

    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    aws["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    review = aws["sqs"].create_queue(QueueName="review")["QueueUrl"]
    env = {
        "DECISIONS_TABLE": "ride-decisions",
        "DECISIONS_STREAM_NAME": "ride-decisions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "REVIEW_QUEUE_URL": review,
        "DECISION_TIMEOUT_SECONDS": "0",
    }
    decision_handler.function.clients.clear()
    handler = decision_handler.handler_for(env)
    predictions = [
        {"model": model, "version": "1", "prediction": {"ride_id": ride_id, field: minutes}}
        for ride_id, minutes in (("r1", 10.0), ("r2", 90.0))  # r2 is a long ride: review
        for model, field in (("ride-duration", "ride_duration"), ("ride-fare", "fare_amount"))
    ]
    recorded.clear()
    try:
        handler({"Records": [kinesis_record(p, i + 1) for i, p in enumerate(predictions)]}, FakeContext())
        handler({"Records": [kinesis_record(b"{poison", 9)]}, FakeContext())
        handler({"sweep": True}, FakeContext())  # the schedule: decides the rides still waiting for tips
    finally:
        decision_handler.function.clients.clear()
    assert {"dynamodb:Query", "kinesis:PutRecords", "sqs:SendMessage"} <= recorded

    service = named(load_dir(INFRA)["module"])["decision_service"]
    missing = recorded - allowed_actions(service)
    assert not missing, f"the decision service calls {sorted(missing)}, which its role in infra/ does not allow"
    assert [body["ride_id"] for body in drain_queue(aws["sqs"], review)] == ["r2"]  # the review path was taken


def test_the_check_fails_when_a_policy_loses_an_action():
    """The cross-check itself: the consumer's policy without kinesis:PutRecords is caught."""
    consumer = named(load_dir(INFRA)["module"])["consumer"]
    broken = {
        **consumer,
        "policy_statements": [
            {**statement, "actions": [a for a in statement["actions"] if a != "kinesis:PutRecords"]}
            for statement in caller_statements(consumer)
        ],
    }
    assert "kinesis:PutRecords" in allowed_actions(consumer)
    assert "kinesis:PutRecords" not in allowed_actions(broken)


def test_the_evaluation_functions_role_allows_every_call_it_makes(aws, monkeypatch, recorded, onnx_model_dir):
    """Completions joined with a decided ride and one waiting for its decision, the sweep, and
    ride events (drift, with its reference read from the model)."""
    import mlflow.onnx

    from lambda_function import evaluation_handler
    from rides.local.stack import evaluations_table_spec
    from rides.stream.decision import DecisionConfig, DecisionStore
    from rides.stream.decision.service import merged
    from rides.stream.evaluation.drift import REFERENCE_KEY, reference
    from rides.stream.events import completion_json, prediction_from
    from tests.helpers import upload_dir

    boto3.client("dynamodb").create_table(**evaluations_table_spec("ride-evaluations"))
    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    fields = {"ride-duration": "ride_duration", "ride-fare": "fare_amount", "ride-tip": "tip_amount"}
    decided = merged(
        None,
        [
            prediction_from({"model": m, "version": "1", "prediction": {"ride_id": "1", f: 9.0}})
            for m, f in fields.items()
        ],
        1_700_000_000.0,
        DecisionConfig.from_env({}),
    )
    DecisionStore(boto3.client("dynamodb"), "ride-decisions").save([decided])
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    aws["s3"].create_bucket(Bucket="rides-models-stg")
    import tempfile
    from pathlib import Path

    import numpy as np

    model_dir = Path(tempfile.mkdtemp()) / "m"
    import onnx

    mlflow.onnx.save_model(
        onnx.load(str(onnx_model_dir / "model.onnx")),
        str(model_dir),
        metadata={REFERENCE_KEY: reference({"trip_distance": np.arange(100.0)}, np.arange(100.0))},
    )
    uri = upload_dir(aws["s3"], model_dir, "rides-models-stg", "mlflow/m", create=False)
    env = {
        "EVALUATIONS_TABLE": "ride-evaluations",
        "DECISIONS_TABLE": "ride-decisions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "DRIFT_REFERENCE_URI": uri,
        "SWEEP_INTERVAL_SECONDS": "0",  # the sweep below reads every waiting ride, whatever its age
    }
    evaluation_handler.function.clients.clear()
    evaluation_handler._references.clear()
    handler = evaluation_handler.handler_for(env)
    from datetime import datetime

    records = [
        kinesis_record(completion_json(1, datetime(2021, 2, 3, 8), duration_minutes=10.0), 1),
        kinesis_record(completion_json(2, datetime(2021, 2, 3, 8), duration_minutes=10.0), 2),  # not decided yet
        kinesis_record(ride(1), 3),
        kinesis_record(b"{poison", 4),
    ]
    recorded.clear()
    try:
        assert handler({"Records": records}, FakeContext()) == {"batchItemFailures": []}
        later = merged(
            None,
            [
                prediction_from(
                    {"model": "ride-duration", "version": "1", "prediction": {"ride_id": "2", "ride_duration": 9.0}}
                )
            ],
            1_700_000_000.0,
            DecisionConfig.from_env({"REQUIRED_MODELS": "ride-duration"}),
        )
        DecisionStore(boto3.client("dynamodb"), "ride-decisions").save([later])
        assert handler({}, FakeContext())["pairs"] == 1  # the sweep joins the waiting one
    finally:
        evaluation_handler.function.clients.clear()
        evaluation_handler._references.clear()
    assert {
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "sqs:SendMessage",
        "s3:GetObject",
    } <= recorded

    evaluation = named(load_dir(INFRA)["module"])["evaluation"]
    missing = recorded - allowed_actions(evaluation)
    assert not missing, f"the evaluation function calls {sorted(missing)}, which its role in infra/ does not allow"


def test_the_producer_policy_allows_every_call_the_producer_library_makes(aws, recorded):
    """rides.producer, plain, aggregated and for completions: what a backend's role needs."""
    from datetime import datetime

    from rides.producer import RideProducer
    from rides.stream.events import completion_json

    for stream in ("ride-events", "ride-completions"):
        aws["kinesis"].create_stream(StreamName=stream, ShardCount=2)
    recorded.clear()
    rides = [ride(i) for i in range(20)]
    assert RideProducer("ride-events", kinesis=aws["kinesis"]).send(rides).sent == 20
    assert RideProducer("ride-events", kinesis=aws["kinesis"], aggregate=True).send(rides).sent == 20
    completion = completion_json(1, datetime(2021, 2, 3, 8, 30), duration_minutes=9.0)
    assert RideProducer("ride-completions", kinesis=aws["kinesis"], contract="completion").send([completion]).sent == 1
    assert {"kinesis:PutRecords", "kinesis:ListShards"} <= recorded

    [statement] = blocks_of(INFRA, "data")["aws_iam_policy_document"]["producer"]["statement"]
    missing = recorded - set(statement["actions"])
    assert not missing, f"rides.producer calls {sorted(missing)}, which the producer policy does not allow"
