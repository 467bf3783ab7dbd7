"""Helpers shared by the unit and integration tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import orjson
from botocore.exceptions import ClientError

from rides.stream.kpl import expand
from rides.stream.lambda_event import kinesis_event_record

ROOT = Path(__file__).resolve().parents[1]

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/ride-events"


def _load_script(name: str):
    """A script under scripts/ as a module (they are run as files, not imported as a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# scripts/terraform_check.py: the validate, plan and apply tests share it.
terraform_check = _load_script("terraform_check")


def upload_dir(s3, local: Path, bucket: str, prefix: str, *, create: bool = True) -> str:
    if create:
        s3.create_bucket(Bucket=bucket)
    for file in local.rglob("*"):
        if file.is_file():
            s3.upload_file(str(file), bucket, f"{prefix}/{file.relative_to(local)}")
    return f"s3://{bucket}/{prefix}"


def ride(ride_id=1, pu=130, do=205, distance=3.66, **extra) -> dict:
    return {"ride_id": ride_id, "ride": {"PULocationID": pu, "DOLocationID": do, "trip_distance": distance, **extra}}


def kinesis_record(data: bytes | dict, seq: int, *, key: str = "1", shard: str = "shardId-000000000000") -> dict:
    """One record of a Lambda Kinesis event, built by the runner's own event builder."""
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    stored = {
        "PartitionKey": key,
        "SequenceNumber": f"{seq:056d}",
        "Data": raw,
        "ApproximateArrivalTimestamp": 1700000000.5,
    }
    return kinesis_event_record(stored, shard, STREAM_ARN, "us-east-1")


def kinesis_event(rides: list, start: int = 1) -> dict:
    return {
        "Records": [
            kinesis_record(r, start + i, key=str(r.get("ride_id", i)) if isinstance(r, dict) else str(i))
            for i, r in enumerate(rides)
        ]
    }


class FakeContext:
    function_name = "ride-duration-consumer"
    aws_request_id = "test"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ride-duration-consumer"
    memory_limit_in_mb = 512

    def __init__(self, millis: int = 60_000):
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def read_stream(kinesis, stream: str) -> list[dict]:
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            out.extend(orjson.loads(r["Data"]) for r in expand(response["Records"]))  # KPL aggregates opened
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return out


def zip_function(lam, name: str, *, environment: dict | None = None, publish: bool = False) -> dict:
    """A minimal Python Lambda in moto (zip package, its own role): for what configuration,
    versions and aliases do, not for running it."""
    import io
    import json
    import zipfile

    import boto3

    iam = boto3.client("iam")
    assume = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(assume))["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    return lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="handler.lambda_handler",
        Code={"ZipFile": package.getvalue()},
        Environment={"Variables": environment or {}},
        Publish=publish,
    )


def cached(name: str, make):
    """`make()`, kept in RIDES_TEST_CACHE when it is set: `make mutation` runs the tests
    thousands of times, each a new pytest session, and each would train the same models again
    (minutes of CPU per mutant). scripts/mutation.py empties the folder before every run."""
    import os
    import pickle

    folder = os.environ.get("RIDES_TEST_CACHE")
    if not folder:
        return make()
    path = Path(folder) / f"{name}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(value))
    partial.replace(path)  # whole or absent: mutants run side by side
    return value


class Failing:
    """A DynamoDB client whose first `failures` calls of one operation fail with `code`."""

    def __init__(self, client, operation: str, code: str, failures: int = 1):
        self.client, self.operation, self.code, self.failures, self.calls = client, operation, code, failures, []

    def __getattr__(self, name):
        if name != self.operation:
            return getattr(self.client, name)

        def call(**request):
            self.calls.append(request)
            if len(self.calls) <= self.failures:
                raise ClientError({"Error": {"Code": self.code, "Message": "no"}, "ResponseMetadata": {}}, name)
            return getattr(self.client, name)(**request)

        return call
