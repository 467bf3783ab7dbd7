"""Clients that do not keep botocore's parsed data files, and a model loader that frees its S3 client."""

from __future__ import annotations

import gc
import tracemalloc

import boto3
import botocore.session

from rides.stream.aws import lean_clients
from rides.stream.model import load_model


def _retained_bytes(build) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def test_lean_clients_work_and_keep_less_than_half_of_what_a_session_keeps(aws):
    def plain():
        session = boto3.session.Session()
        return session, {name: session.client(name) for name in ("kinesis", "sqs")}

    plain_bytes, _ = _retained_bytes(plain)
    lean_bytes, made = _retained_bytes(lambda: lean_clients(("kinesis", "sqs")))
    # endpoints.json alone is ~7 MB of dicts; the clients themselves need ~3 MB.
    assert lean_bytes < plain_bytes / 2, (lean_bytes, plain_bytes)
    assert made["kinesis"]._loader._cache == {}

    made["kinesis"].create_stream(StreamName="s", ShardCount=1)
    assert made["kinesis"].list_streams()["StreamNames"] == ["s"]
    queue = made["sqs"].create_queue(QueueName="q")["QueueUrl"]
    made["sqs"].send_message(QueueUrl=queue, MessageBody="x")
    # A paginator needs a file that was released: it is loaded again.
    pages = list(made["kinesis"].get_paginator("list_streams").paginate())
    assert pages[0]["StreamNames"] == ["s"]


def test_lean_dynamodb_client_works_for_the_decision_service(aws):
    dynamodb = lean_clients(["dynamodb"])["dynamodb"]
    assert dynamodb._loader._cache == {}
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="t", Item={"k": {"S": "a"}}, ConditionExpression="attribute_not_exists(k)")
    assert dynamodb.get_item(TableName="t", Key={"k": {"S": "a"}})["Item"] == {"k": {"S": "a"}}


def test_loading_a_model_from_s3_leaves_no_botocore_session_behind(aws, onnx_model_dir, monkeypatch):
    aws["s3"].create_bucket(Bucket="bkt-models")
    for file in onnx_model_dir.iterdir():
        aws["s3"].upload_file(str(file), "bkt-models", f"m/{file.name}")
    # Not even boto3's default session, which would keep what it parsed for good.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    def sessions() -> int:
        gc.collect()
        return sum(isinstance(obj, botocore.session.Session) for obj in gc.get_objects())

    before = sessions()
    model = load_model("s3://bkt-models/m")
    assert model.flavor == "onnx"
    assert sessions() == before
