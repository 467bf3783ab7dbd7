"""The combined mode: the quick model answers, the stream's answer and the decision follow
(long-poll and server-sent events), behind API keys; and a ride is put on the stream once."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from fastapi.testclient import TestClient

from rides.stream.decision import DecisionConfig, DecisionStore
from rides.stream.decision.service import decided, merged
from rides.stream.events import PredictionIn
from rides.stream.model import load_model
from rides.web.app import create_app
from rides.web.auth import ApiKeys, AuthConfigError, from_env, new_key
from rides.web.service import RideService
from tests.helpers import read_stream, ride

CONFIG = DecisionConfig("ride-decisions", "ride-decisions")


@pytest.fixture
def service(aws, onnx_model_dir):
    from rides.local.stack import decisions_table_spec

    aws["kinesis"].create_stream(StreamName="ride-events", ShardCount=1)
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**decisions_table_spec("ride-decisions"))
    quick = load_model(str(onnx_model_dir), name="ride-duration-quick", version="2")
    return RideService(
        quick, kinesis=aws["kinesis"], input_stream="ride-events", decisions=DecisionStore(dynamodb, "ride-decisions")
    )


@pytest.fixture
def keys():
    backend_key, backend = new_key("backend")
    reader_key, reader = new_key("dashboard", ["read"])
    quick_key, quick_only = new_key("kiosk", ["predict"])
    return {"backend": backend_key, "reader": reader_key, "quick": quick_key}, ApiKeys(
        {**backend, **reader, **quick_only}
    )


def stream_answers(service: RideService, ride_id: str, *, after: float, decide: bool = True) -> threading.Thread:
    """Stands for the consumer and the decision service: the accurate model's prediction lands
    in the decisions table `after` seconds, then (`decide`) the decision."""

    def work():
        time.sleep(after)
        predictions = [
            PredictionIn(ride_id, "ride-duration", "7", "ride_duration", 14.25, {}),
            PredictionIn(ride_id, "ride-fare", "7", "fare_amount", 18.5, {}),
        ]
        state = merged(None, predictions, time.time(), CONFIG)
        service.decisions.save([state])
        if decide:
            time.sleep(0.2)
            service.decisions.save([decided(state, CONFIG, "complete", time.time())])

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_the_quick_model_answers_and_says_which_model_and_version(service):
    client = TestClient(create_app(service))
    body = client.post("/predict", json=ride("q-1")).json()
    assert (body["model"], body["version"]) == ("ride-duration-quick", "2")
    assert service.enhanced_model == "ride-duration"  # whose stream prediction is the enhanced answer


def test_long_poll_returns_once_the_streams_prediction_exists(service):
    client = TestClient(create_app(service))
    assert client.post("/predict", json={**ride("lp-1"), "stream": True}).json()["stream"] == {"queued": True}
    stream_answers(service, "lp-1", after=0.4, decide=False)
    started = time.monotonic()
    response = client.get("/predictions/lp-1", params={"wait": 10})
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["predictions"]["ride-duration"]["value"] == 14.25
    assert 0.3 < waited < 5  # returned when the answer came, not at the end of the wait


def test_long_poll_ends_with_202_and_what_is_known(service):
    client = TestClient(create_app(service))
    pending = client.get("/predictions/nobody", params={"wait": 0.3})
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    stream_answers(service, "lp-2", after=0, decide=False).join()
    known = client.get("/predictions/lp-2", params={"wait": 0.3, "until": "decision"})
    assert known.status_code == 202 and known.json()["predictions"]["ride-duration"]["value"] == 14.25
    assert known.json()["decision"] is None
    assert client.get("/predictions/nobody").status_code == 404  # without wait: the original contract
    assert client.get("/predictions/x", params={"wait": 999}).status_code == 422  # bounded


def parse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_server_sent_events_bring_the_quick_answer_then_the_enhanced_one_then_the_decision(service, aws):
    client = TestClient(create_app(service))
    stream_answers(service, "sse-1", after=0.3)
    response = client.post(
        "/predict", json={**ride("sse-1"), "stream": True}, headers={"accept": "text/event-stream"}, params={"wait": 10}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["quick", "enhanced", "decision"]
    quick, enhanced, decision = (data for _, data in events)
    assert quick["model"] == "ride-duration-quick" and quick["stream"] == {"queued": True}
    assert enhanced == {
        **enhanced,
        "ride_id": "sse-1",
        "ride_duration": 14.25,
        "model": "ride-duration",
        "version": "7",
    }
    assert decision["decision"] in ("accept", "review") and decision["ride_id"] == "sse-1"
    assert enhanced["after_ms"] <= decision["after_ms"]
    [queued] = read_stream(aws["kinesis"], "ride-events")
    assert queued["ride_id"] == "sse-1"

    later = client.get("/predictions/sse-1/events", params={"wait": 2})
    assert [name for name, _ in parse_events(later.text)] == ["enhanced", "decision"]


def test_server_sent_events_end_with_timeout_and_without_consent_only_the_quick_answer(service):
    client = TestClient(create_app(service))
    headers = {"accept": "text/event-stream"}
    timed_out = client.post("/predict", json={**ride("sse-2"), "stream": True}, headers=headers, params={"wait": 0.3})
    assert [name for name, _ in parse_events(timed_out.text)] == ["quick", "timeout"]
    no_consent = client.post("/predict", json=ride("sse-3"), headers=headers)
    assert [name for name, _ in parse_events(no_consent.text)] == ["quick"]
    several = client.post("/predict", json=[ride(1), ride(2)], headers=headers)
    assert several.status_code == 422


def test_many_copies_of_one_ride_are_refused_before_any_put(service, aws):
    client = TestClient(create_app(service))
    calls = []
    original = service.publisher.client.put_records
    service.publisher.client.put_records = lambda **kw: calls.append(kw) or original(**kw)
    response = client.post("/predict", json=[{**ride("same"), "stream": True}] * 500)
    assert response.status_code == 422 and "ride_id same" in response.json()["detail"][0]["msg"]
    assert calls == [] and read_stream(aws["kinesis"], "ride-events") == []
    # Quick answers for repeated ids are harmless; distinct rides go in one call.
    assert client.post("/predict", json=[ride("same")] * 3).status_code == 200
    mixed = [{**ride(f"r{i}"), "stream": True} for i in range(300)]
    assert all(a["stream"]["queued"] for a in client.post("/predict", json=mixed).json())
    assert len(calls) == 1


def test_every_route_but_health_and_docs_needs_a_key_and_the_fast_path_keeps_the_check(service, keys):
    plain, auth = keys
    client = TestClient(create_app(service, auth))
    for method, path, body in (
        ("POST", "/predict", ride(1)),
        ("GET", "/predictions/1", None),
        ("GET", "/predictions/1/events", None),
    ):
        response = client.request(method, path, json=body)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", path
        wrong = client.request(method, path, json=body, headers={"x-api-key": "rk_guess"})
        assert wrong.status_code == 401, path
    assert client.get("/health").status_code == 200 and client.get("/openapi.json").status_code == 200

    ok = client.post("/predict", json=ride(1), headers={"x-api-key": plain["backend"]})
    bearer = client.post("/predict", json=ride(1), headers={"authorization": f"Bearer {plain['backend']}"})
    assert ok.status_code == bearer.status_code == 200
    # scopes: a read-only key cannot ask or queue; a predict-only key cannot queue or read
    reader, quick = {"x-api-key": plain["reader"]}, {"x-api-key": plain["quick"]}
    assert client.post("/predict", json=ride(1), headers=reader).status_code == 403
    assert client.post("/predict", json=ride(1), headers=quick).status_code == 200
    refused = client.post("/predict", json={**ride(1), "stream": True}, headers=quick)
    assert refused.status_code == 403 and "may not put rides on the stream" in refused.json()["detail"]
    assert client.get("/predictions/1", headers=quick).status_code == 403
    assert client.get("/predictions/1", headers=reader).status_code == 404


def test_keys_come_from_the_environment_or_a_secret_and_are_required_by_default(aws):
    with pytest.raises(AuthConfigError, match="rides api-key"):
        from_env({})
    assert from_env({"RIDES_WEB_AUTH": "none"}) is None
    key, entry = new_key("backend", ["predict"])
    from_variable = from_env({"RIDES_API_KEYS": json.dumps(entry)})
    assert from_variable.client([(b"x-api-key", key.encode())]).scopes == frozenset({"predict"})
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="rides-web-api-keys", SecretString=json.dumps(entry))["ARN"]
    assert from_env({"RIDES_API_KEYS_SECRET_ARN": arn}).client([(b"x-api-key", key.encode())]).name == "backend"
    assert key not in json.dumps(entry)  # only the hash is configured
    with pytest.raises(AuthConfigError, match="64 hex"):
        ApiKeys({"x": {"sha256": "abc"}})
    with pytest.raises(AuthConfigError, match="unknown scopes"):
        ApiKeys({"x": {"sha256": "a" * 64, "scopes": ["admin"]}})
    with pytest.raises(AuthConfigError, match="api-key or none"):
        from_env({"RIDES_WEB_AUTH": "off"})
