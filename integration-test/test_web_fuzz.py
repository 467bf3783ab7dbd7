"""schemathesis against the real web service: `rides serve` as its own process on 127.0.0.1,
with API keys on, the quick model, and the emulator behind it. Requests generated from the
service's own OpenAPI document must never get a server error, a status the document does not
list, or a body that does not match its documented schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from rides.local.backend import LOCAL_ENV, clients, free_port
from rides.local.stack import decisions_table_spec
from rides.web.auth import new_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(emulator, quick_model_dir, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    stream, table = f"web-events-{suffix}", f"web-decisions-{suffix}"
    aws = clients(emulator.env())
    aws["kinesis"].create_stream(StreamName=stream, ShardCount=1)
    aws["dynamodb"].create_table(**decisions_table_spec(table))
    key, entry = new_key("fuzzer")
    reader_key, reader = new_key("dashboard", ["read"])
    port = free_port()
    env = {
        **os.environ,
        **LOCAL_ENV,
        "AWS_ENDPOINT_URL": emulator.endpoint,
        "MODEL_URI": str(quick_model_dir),
        "MODEL_NAME": "ride-duration-quick",
        "MODEL_VERSION": "4",
        "RIDES_WEB_AUTH": "api-key",
        "RIDES_API_KEYS": orjson.dumps({**entry, **reader}).decode(),
        "RIDES_INPUT_STREAM": stream,
        "RIDES_DECISIONS_TABLE": table,
        "RIDES_MAX_WAIT_SECONDS": "0.3",  # the long-polls, shortened so that fuzzing them is quick
        "RIDES_HOME": str(tmp_path),
    }
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rides.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/health", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "rides serve did not start"
            time.sleep(0.2)
    yield {"base": base, "key": key, "reader_key": reader_key, "stream": stream, "aws": aws}
    proc.terminate()
    proc.wait(timeout=15)


def test_schemathesis_finds_nothing_against_the_real_service(served):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{served['base']}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/health",
        "/predict",
        "/predictions/{ride_id}",
        "/predictions/{ride_id}/events",
    }
    for operation in operations:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(headers={"x-api-key": served["key"]}, checks=checks)

        check()


def test_the_documented_refusals_are_what_the_service_sends(served):
    """401, 403, 413, 404, 202 and 422, each documented with its body."""
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_url(f"{served['base']}/openapi.json")
    checks = [status_code_conformance, response_schema_conformance]
    ride = {"ride_id": 1, "ride": {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 1.2}}
    predict = schema["/predict"]["POST"]
    read = schema["/predictions/{ride_id}"]["GET"]
    full = {"x-api-key": served["key"]}
    cases = [
        (predict.Case(body=ride), {}, 401),
        (predict.Case(body=ride), {"x-api-key": "not-a-key"}, 401),
        (predict.Case(body=ride), {"x-api-key": served["reader_key"]}, 403),
        (predict.Case(body=[ride] * 1001), full, 413),
        (
            predict.Case(body={**ride, "ride": {**ride["ride"], "trip_distance": 1.69e308}}),
            {"x-api-key": served["key"]},
            422,
        ),
        (read.Case(path_parameters={"ride_id": "nothing-yet"}), {"x-api-key": served["key"]}, 404),
        (read.Case(path_parameters={"ride_id": "nothing-yet"}, query={"wait": 0.1}), {"x-api-key": served["key"]}, 202),
    ]
    for case, headers, expected in cases:
        response = case.call_and_validate(headers=headers, checks=checks)
        assert response.status_code == expected, (expected, response.text)
    # the 1.69e308-mile ride was not put on the stream
    kinesis = served["aws"]["kinesis"]
    shard = kinesis.list_shards(StreamName=served["stream"])["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=served["stream"], ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    assert kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"] == []
