"""The whole flow against the emulator process and the `rides consume` process."""

from __future__ import annotations

import base64
import threading
import time

import orjson
import pytest

from rides.data import read_trips
from rides.local.producer import produce, ride_events
from rides.local.reader import collect_predictions, drain_queue
from rides.operate.stream_reader import StreamReader

pytestmark = pytest.mark.integration

# The course's test event payload (a pretty-printed ride 256), byte for byte.
COURSE_DATA = (
    "ewogICAgICAgICJyaWRlIjogewogICAgICAgICAgICAiUFVMb2NhdGlvbklEIjogMTMwLAogICAgICAgICAgICAiRE9Mb2NhdGlv"
    "bklEIjogMjA1LAogICAgICAgICAgICAidHJpcF9kaXN0YW5jZSI6IDMuNjYKICAgICAgICB9LCAKICAgICAgICAicmlkZV9pZCI6"
    "IDI1NgogICAgfQ=="
)


def wait_for_rides(stack, expected_ids: set[str], timeout: float = 120.0) -> dict[str, list[dict]]:
    """Read predictions until every expected ride has one; returns ride id → predictions."""
    reader = StreamReader(stack["kinesis"], stack["names"].predictions_stream)
    by_ride = collect_predictions(reader, expected_ids, timeout)
    return {ride: [body for body, _ in seen] for ride, seen in by_ride.items()}


def dead_letters(stack) -> list[dict]:
    return drain_queue(stack["sqs"], stack["created"][f"sqs:{stack['names'].dead_letter_queue}"])


@pytest.fixture(scope="module")
def rides_frame():
    return read_trips("2021-02").head(3000)


def test_full_flow_with_real_rides_and_malformed_events(stack, consumer, rides_frame):
    consumer()
    events = list(ride_events(rides_frame.head(2000)))
    events.insert(500, ("bad-1", b"{oops"))
    events.insert(1500, ("bad-2", orjson.dumps({"ride_id": 9, "ride": {"PULocationID": 0}})))
    produce(stack["kinesis"], stack["names"].input_stream, events, progress=False, allow_malformed=True)
    by_ride = wait_for_rides(stack, {str(i) for i in range(1, 2001)})
    assert len(by_ride) == 2000
    durations = [p[0]["prediction"]["ride_duration"] for p in by_ride.values()]
    assert 5 < sum(durations) / len(durations) < 30
    assert {p[0]["version"] for p in by_ride.values()} == {"1"}
    deadline = time.monotonic() + 30
    letters: list[dict] = []
    while len(letters) < 2 and time.monotonic() < deadline:
        letters += dead_letters(stack)
        time.sleep(0.2)
    assert sorted(base64.b64decode(letter["data"]) for letter in letters) == sorted(
        [b"{oops", orjson.dumps({"ride_id": 9, "ride": {"PULocationID": 0}})]
    )
    assert all(letter["error"] and letter["source"]["sequence_number"] for letter in letters)


def test_the_course_kinesis_test_event_shape(stack, monkeypatch):
    """The MLOps Zoomcamp's handler test event, through the real handler, to the emulator."""
    from lambda_function import handler as handler_module
    from tests.helpers import FakeContext

    for key in ("MODEL_URI", "MODEL_VERSION", "PREDICTIONS_STREAM_NAME", "DEAD_LETTER_QUEUE_URL"):
        monkeypatch.setenv(key, stack["env"][key])
    handler_module.function.clients.clear()
    course_event = {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": "49630081666084879290581185630324770398608704880802529282",
                    "data": COURSE_DATA,
                    "approximateArrivalTimestamp": 1654161514.132,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": "shardId-000000000000:49630081666084879290581185630324770398608704880802529282",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::XXXXXXXXX:role/lambda-kinesis-role",
                "awsRegion": "eu-west-1",
                "eventSourceARN": "arn:aws:kinesis:eu-west-1:XXXXXXXXX:stream/ride_events",
            }
        ]
    }
    response = handler_module.lambda_handler(course_event, FakeContext())
    handler_module.function.clients.clear()
    assert response == {"batchItemFailures": []}
    by_ride = wait_for_rides(stack, {"256"}, timeout=10)
    [prediction] = by_ride["256"]
    assert prediction["prediction"]["ride_id"] == 256
    assert prediction["source"]["sequence_number"] == "49630081666084879290581185630324770398608704880802529282"


def test_consumer_killed_mid_stream_and_restarted_loses_nothing(stack, consumer, rides_frame):
    events = list(ride_events(rides_frame))
    produce(stack["kinesis"], stack["names"].input_stream, events, progress=False)
    first = consumer("--batch-size", "100")
    reader = StreamReader(stack["kinesis"], stack["names"].predictions_stream)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 300 and time.monotonic() < deadline:
        seen += len(reader.poll())
        time.sleep(0.05)
    first.kill()
    assert 0 < seen < len(events), "kill it while it is still working"
    consumer("--batch-size", "100")
    by_ride = wait_for_rides(stack, {str(i) for i in range(1, len(events) + 1)})
    assert len(by_ride) == len(events)  # duplicates are allowed (at-least-once), gaps are not


def test_missing_output_stream_records_are_retried_then_delivered(stack, consumer, rides_frame):
    """The output stream does not exist yet: batches are reported and retried, none lost."""
    names = stack["names"]
    late_stream = names.predictions_stream + "-late"
    c = consumer("--batch-size", "50", "--max-retries", "-1", env={"PREDICTIONS_STREAM_NAME": late_stream})
    produce(stack["kinesis"], names.input_stream, list(ride_events(rides_frame.head(200))), progress=False)
    time.sleep(3)
    assert c.proc.poll() is None
    stack["kinesis"].create_stream(StreamName=late_stream, ShardCount=1)
    stack["kinesis"].get_waiter("stream_exists").wait(StreamName=late_stream)
    reader = StreamReader(stack["kinesis"], late_stream)
    got = {str(orjson.loads(r["Data"])["prediction"]["ride_id"]) for r in reader.read_all(200, timeout=90)}
    assert got >= {str(i) for i in range(1, 201)}


def test_concurrent_producers_lose_nothing(stack, consumer, rides_frame):
    """Four producers at once, PutRecords concurrently: the emulator must not lose a record."""
    consumer()
    frame = rides_frame.head(2400)
    parts = [list(ride_events(frame.iloc[i::4], first_id=1 + i * 10_000)) for i in range(4)]
    threads = [
        threading.Thread(
            target=produce,
            args=(stack["kinesis"], stack["names"].input_stream, part),
            kwargs={"progress": False, "batch_size": 100},
        )
        for part in parts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = {key for part in parts for key, _ in part}
    by_ride = wait_for_rides(stack, expected)
    assert expected <= by_ride.keys()


def test_all_consumers_and_the_decision_service_at_once(stack, consumer, promoted_everywhere, rides_frame):
    """Three consumers (one process) and the decision service (another) on one stream."""
    from rides.local.reader import collect_decisions
    from rides.settings import CONSUMERS

    consumer(*[arg for key in CONSUMERS for arg in ("--consumer", key)])
    consumer("--timeout", "600", command="decide")
    rides = list(ride_events(rides_frame.head(300)))
    produce(stack["kinesis"], stack["names"].input_stream, rides + rides[:50], progress=False)  # with duplicates
    expected = {key for key, _ in rides}
    models = [spec.model_name for spec in CONSUMERS.values()]
    by_ride = collect_predictions(
        StreamReader(stack["kinesis"], stack["names"].predictions_stream), expected, 120, models=models
    )
    assert all({body["model"] for body, _ in by_ride[ride]} == set(models) for ride in expected)
    decisions = collect_decisions(StreamReader(stack["kinesis"], stack["names"].decisions_stream), expected, 120)
    assert decisions.keys() == expected
    assert all(
        d["complete"] and d["reason"] == "complete" and d["decision"] in ("accept", "review")
        for d in decisions.values()
    )
    time.sleep(3)  # the duplicate events produced extra predictions: still one decision per ride
    reader = StreamReader(stack["kinesis"], stack["names"].decisions_stream)
    assert len(reader.read_all(10_000, timeout=3)) == len(expected)
