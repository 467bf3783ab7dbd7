"""The web service: ASGI test client, a real server process on 127.0.0.1, and schemathesis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from rides.stream.model import load_model
from rides.web.app import create_app
from rides.web.schema import MAX_BODY_BYTES
from rides.web.service import RideService
from tests.helpers import read_stream, ride

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def service(aws, onnx_model_dir):
    aws["kinesis"].create_stream(StreamName="ride-events", ShardCount=1)
    from rides.local.stack import decisions_table_spec
    from rides.stream.decision import DecisionStore

    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**decisions_table_spec("ride-decisions"))
    model = load_model(str(onnx_model_dir), version="5")
    return RideService(
        model, kinesis=aws["kinesis"], input_stream="ride-events", decisions=DecisionStore(dynamodb, "ride-decisions")
    )


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def test_predicts_one_ride(client):
    response = client.post("/predict", json=ride(156))
    assert response.status_code == 200
    body = response.json()
    assert body["ride_id"] == 156 and body["model"] == "ride-duration" and body["version"] == "5"
    assert 1 < body["ride_duration"] < 60
    assert "stream" not in body


def test_predicts_a_list_in_order(client):
    response = client.post("/predict", json=[ride("a", distance=0.5), ride("b", 1, 132, 17.0)])
    assert [r["ride_id"] for r in response.json()] == ["a", "b"]
    assert response.json()[1]["ride_duration"] > response.json()[0]["ride_duration"]


def test_same_answer_as_the_consumer(client, service):
    from rides.stream.events import validate_event

    event = ride(7, 74, 75, 1.2, lpep_pickup_datetime="2021-02-03T08:15:00")
    assert client.post("/predict", json=event).json()["ride_duration"] == service.predict([validate_event(event)])[0]


def test_stream_consent_puts_the_ride_on_the_stream(client, aws):
    response = client.post("/predict", json={**ride("r-9"), "stream": True})
    assert response.json()["stream"] == {"queued": True}
    [queued] = read_stream(aws["kinesis"], "ride-events")
    assert queued == ride("r-9")  # the stream contract, without the consent flag


def test_a_failed_put_keeps_the_quick_answer(client, aws):
    aws["kinesis"].delete_stream(StreamName="ride-events")
    response = client.post("/predict", json={**ride(3), "stream": True})
    assert response.status_code == 200
    body = response.json()
    assert body["ride_duration"] > 0
    assert body["stream"]["queued"] is False and body["stream"]["error"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    "payload, loc",
    [
        (
            {"ride_id": 1, "ride": {"PULocationID": 999, "DOLocationID": 1, "trip_distance": 1}},
            ["body", "ride", "PULocationID"],
        ),
        ({"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 1}}, ["body", "ride", "trip_distance"]),
        ({"ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": 1}}, ["body", "ride_id"]),
        (
            [ride(1), {"ride_id": 2, "ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": -1}}],
            ["body", 1, "ride", "trip_distance"],
        ),
        ({**ride(1), "stream": "yes"}, ["body", "stream"]),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, payload, loc):
    response = client.post("/predict", json=payload)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == loc


def test_bad_json_and_empty_lists_are_422(client):
    assert client.post("/predict", content=b"{nope", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/predict", json=[]).status_code == 422


def test_oversized_bodies_and_lists_are_refused(client):
    big = (
        b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": 1}, "x": "'
        + (b"a" * MAX_BODY_BYTES)
        + b'"}'
    )
    assert client.post("/predict", content=big, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/predict", json=[ride(i) for i in range(1001)]).status_code == 413


def test_streamed_predictions_404_until_the_decision_service_stores_them(client, service):
    assert client.get("/predictions/r-1").status_code == 404
    from rides.stream.decision import DecisionConfig, RideState
    from rides.stream.decision.service import merged
    from rides.stream.events import PredictionIn

    config = DecisionConfig("ride-decisions", "ride-decisions")
    state = merged(None, [PredictionIn("r-1", "ride-duration", "5", "ride_duration", 12.5, {})], 1.0, config)
    assert isinstance(state, RideState)
    assert service.decisions.save([state]).written == [state]
    body = client.get("/predictions/r-1").json()
    assert body["predictions"]["ride-duration"]["value"] == 12.5
    assert body["decision"] is None and body["status"] == "collecting"


def test_health_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "model": "ride-duration", "version": "5", "flavor": "onnx"}
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "RideEventIn" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


@pytest.fixture
def quick_service(aws, quick_model_dir):
    aws["kinesis"].create_stream(StreamName="ride-events", ShardCount=1)
    model = load_model(str(quick_model_dir), name="ride-duration-quick", version="3")
    return RideService(model, kinesis=aws["kinesis"], input_stream="ride-events")


def test_a_ride_the_model_has_no_finite_answer_for_is_a_422_and_is_not_queued(quick_service, aws):
    """The quick model is linear in the distance: 1.69e308 miles gives inf. Before, the answer
    was 200 with "ride_duration": null, and the ride went on the stream."""
    client = TestClient(create_app(quick_service))
    response = client.post("/predict", json={**ride(7, distance=1.69e308), "stream": True})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "ride", "trip_distance"] and "no finite duration" in error["msg"]
    many = client.post("/predict", json=[{**ride(8), "stream": True}, {**ride(9, distance=1e308), "stream": True}])
    assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", 1, "ride", "trip_distance"]
    assert read_stream(aws["kinesis"], "ride-events") == []  # nothing of either request was queued
    assert client.post("/predict", json=ride(10, distance=12.5)).status_code == 200


def test_openapi_schema_based(quick_service):
    """schemathesis: requests generated from the OpenAPI document never get a 500, a `null`
    duration or a status the document does not list (the real server: integration-test)."""
    import math

    import schemathesis
    from hypothesis import HealthCheck, given, settings

    app = create_app(quick_service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    strategy = schema["/predict"]["POST"].as_strategy()

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        response = case.call()
        assert response.status_code in (200, 413, 422), response.text
        if response.status_code == 200:
            body = response.json()
            for answer in body if isinstance(body, list) else [body]:
                assert isinstance(answer["ride_duration"], float) and math.isfinite(answer["ride_duration"])

    check()


def test_a_real_server_process_on_loopback(onnx_model_dir, tmp_path):
    import json

    from rides.web.auth import new_key

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "MODEL_URI": str(onnx_model_dir),
        "MODEL_VERSION": "8",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }  # no AWS: the quick answer still works
    env.pop("RIDES_WEB_AUTH", None)
    # Outside the local stack the service will not serve without API keys, and says how to get one.
    refused = subprocess.run(
        [sys.executable, "-m", "rides.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "rides api-key" in refused.stdout + refused.stderr
    key, entry = new_key("backend")
    env["RIDES_API_KEYS"] = json.dumps(entry)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rides.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json()["version"] == "8"
        url = f"http://127.0.0.1:{port}/predict"
        assert httpx.post(url, content=orjson.dumps(ride(1)), timeout=5).status_code == 401
        answer = httpx.post(url, content=orjson.dumps(ride(1)), headers={"x-api-key": key}, timeout=5)
        assert answer.status_code == 200 and answer.json()["ride_duration"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_routed_endpoint_answers_like_the_fast_path(service):
    from rides.web.app import _fastapi_app

    routed, fast = TestClient(_fastapi_app(service)), TestClient(create_app(service))
    for payload in (ride(1), [ride(1), ride(2, distance=9.0)], {"ride_id": 1, "ride": {}}):
        a, b = routed.post("/predict", json=payload), fast.post("/predict", json=payload)
        assert (a.status_code, a.json()) == (b.status_code, b.json())


def test_on_the_local_stack_an_explicit_api_key_setting_wins_over_its_defaults(monkeypatch):
    """`rides serve` with RIDES_WEB_AUTH=api-key and keys, a local stack running, no
    AWS_ENDPOINT_URL: the stack's endpoint is used, and authentication stays on."""
    import click
    from click.testing import CliRunner

    from rides.cli import base as cli
    from rides.local.backend import StackInfo
    from rides.web.auth import from_env, new_key

    key, entry = new_key("backend")
    monkeypatch.setenv("RIDES_WEB_AUTH", "api-key")
    monkeypatch.setenv("RIDES_API_KEYS", orjson.dumps(entry).decode())
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr("rides.local.stack.read_info", lambda: StackInfo("moto", "http://127.0.0.1:4566", 1, "log"))
    seen = {}

    @click.command(cls=cli.UsesAWS)
    def probe():
        seen.update(endpoint=os.environ["AWS_ENDPOINT_URL"], auth=from_env(os.environ))

    assert CliRunner().invoke(probe, []).exit_code == 0
    assert seen["endpoint"] == "http://127.0.0.1:4566"
    assert seen["auth"] is not None and seen["auth"].client([(b"x-api-key", key.encode())]).name == "backend"
    monkeypatch.delenv("RIDES_WEB_AUTH")  # without a setting, the stack's default: no keys
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert CliRunner().invoke(probe, []).exit_code == 0 and seen["auth"] is None
