"""The decision service: the join under reordering and duplication, timeouts, rules, poison
records and failed publications (moto DynamoDB, Kinesis, SQS)."""

from __future__ import annotations

import json

import boto3
import orjson
import pytest

from lambda_function import decision_handler
from rides.local.reader import drain_queue
from rides.local.stack import decisions_table_spec
from rides.stream.decision import DecisionConfig, Rule, evaluate, load_rules
from rides.stream.events import InvalidEvent, parse_prediction
from tests.helpers import FakeContext, kinesis_record, read_stream

FIELDS = {"ride-duration": "ride_duration", "ride-fare": "fare_amount", "ride-tip": "tip_amount"}


def prediction(ride_id, model, value, seq=1):
    return {
        "model": model,
        "version": "1",
        "prediction": {"ride_id": ride_id, FIELDS[model]: value},
        "source": {"shard_id": "shardId-000000000000", "sequence_number": str(seq)},
    }


def complete_ride(ride_id):
    """Every required model's prediction of one ride: what completes it (accepted by the rules)."""
    return [prediction(ride_id, m, v) for m, v in (("ride-duration", 10.0), ("ride-fare", 10.0), ("ride-tip", 1.0))]


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
    review = aws["sqs"].create_queue(QueueName="ride-review")["QueueUrl"]
    env = {
        "DECISIONS_TABLE": "ride-decisions",
        "DECISIONS_STREAM_NAME": "ride-decisions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "REVIEW_QUEUE_URL": review,
        "DECISION_TIMEOUT_SECONDS": "60",
    }
    decision_handler.function.clients.clear()
    clock = Clock()
    monkeypatch.setattr("rides.stream.decision.service.time.time", clock)
    yield {
        **aws,
        "env": env,
        "dlq": dlq,
        "review": review,
        "handler": decision_handler.handler_for(env),
        "clock": clock,
    }
    decision_handler.function.clients.clear()


def send(service, predictions, start=1):
    event = {"Records": [kinesis_record(p, start + i) for i, p in enumerate(predictions)]}
    return service["handler"](event, FakeContext())


def decisions_stored(service, ride_id):
    from rides.stream.decision import DecisionStore

    return DecisionStore(boto3.client("dynamodb"), "ride-decisions").get(ride_id)


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


def test_duplicates_are_absorbed_and_a_redelivery_repeats_the_same_decision(service):
    batch = complete_ride("r1")
    send(service, batch + batch)  # the whole batch delivered twice
    assert len(decisions(service)) == 1
    # redelivered after a retry: the stored decision goes out again (its batch cannot know
    # whether the first copy did), the same record, which readers drop by decision_id
    send(service, batch, start=100)
    first, again = decisions(service)
    assert first == again and len(distinct_decisions(service)) == 1
    stored = decisions_stored(service, "r1")
    assert stored.version == 1 and stored.due_at is None  # one write, and never in the sweep's index


def watches(service) -> dict[str, list[str]]:
    """Every watch item in the table: key → the rides it lists."""
    from rides.stream.decision import DecisionStore
    from rides.stream.decision.store import is_watch

    store = DecisionStore(boto3.client("dynamodb"), "ride-decisions")
    keys = [k for page in store.due(float("inf")) for k in page if is_watch(k)]
    return store.watched(keys)


def test_a_batch_that_completes_a_ride_already_stored_merges_into_it(service):
    send(service, [prediction("r3", "ride-tip", 2.0, seq=7)])
    # collecting: watched (the sweep would time it out), the ride itself not in the index
    assert decisions_stored(service, "r3").due_at is None and list(watches(service).values()) == [["r3"]]
    everything = [prediction("r3", m, v) for m, v in (("ride-duration", 10.0), ("ride-fare", 10.0), ("ride-tip", 2.0))]
    assert send(service, everything, start=10) == {"batchItemFailures": []}
    [decision] = decisions(service)
    assert decision["reason"] == "complete" and decision["decision_id"] == "r3:2"
    stored = decisions_stored(service, "r3")
    assert stored.status == "decided" and stored.due_at is None
    assert stored.predictions == {
        m: {"field": FIELDS[m], "value": v, "version": "1"}
        for m, v in (("ride-duration", 10.0), ("ride-fare", 10.0), ("ride-tip", 2.0))
    }


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
    # acted on, not only labelled: the decision, flags and predictions wait in the review queue
    [queued] = drain_queue(service["sqs"], service["review"])
    assert queued == decision


def test_only_review_decisions_are_queued_and_a_queue_outage_loses_none(service):
    accept = complete_ride("ok")
    review = [
        prediction("long", m, v, seq=i + 10)
        for i, (m, v) in enumerate((("ride-duration", 90.0), ("ride-fare", 60.0), ("ride-tip", 5.0)))
    ]
    service["sqs"].delete_queue(QueueUrl=service["review"])
    response = send(service, accept + review)
    # the accepted ride is done; the ride to review is reported and stays decided, not published
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{i:056d}" for i in (4, 5, 6)]
    assert decisions_stored(service, "ok").status == "decided"
    assert decisions_stored(service, "long").status == "decided"
    service["sqs"].create_queue(QueueName="ride-review")
    assert send(service, review, start=4) == {"batchItemFailures": []}  # Lambda's retry
    [queued] = drain_queue(service["sqs"], service["review"])
    assert queued["ride_id"] == "long" and queued["flags"] == ["long_ride"]
    # the stream may carry the decision twice (published, then the queue failed): one decision_id
    assert {d["decision_id"] for d in decisions(service) if d["ride_id"] == "long"} == {queued["decision_id"]}


def test_a_timed_out_review_decision_is_queued_by_the_sweep(service):
    send(service, [prediction("slow-long", "ride-duration", 80.0)])
    service["clock"].now += 61
    result = service["handler"]({"source": "aws.events"}, FakeContext())
    assert result["timed_out"] == 1 and result["queued_for_review"] == 1
    [queued] = drain_queue(service["sqs"], service["review"])
    assert queued["ride_id"] == "slow-long" and queued["reason"] == "timeout"


def test_timeout_decides_with_what_arrived(service):
    send(service, [prediction("slow", "ride-duration", 20.0)])
    assert service["handler"]({}, FakeContext())["timed_out"] == 0
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
    batch = complete_ride("r5")
    response = send(service, batch)
    # every record of the ride is reported; Lambda retries from the first
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{i:056d}" for i in (1, 2, 3)]
    assert decisions_stored(service, "r5").status == "decided"
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    assert send(service, batch) == {"batchItemFailures": []}
    assert len(decisions(service)) == 1
    send(service, batch, start=200)  # delivered once more: the same decision again, no other
    assert len(distinct_decisions(service)) == 1


def test_unreachable_table_reports_the_records_and_logs_why(service, monkeypatch, caplog):
    monkeypatch.setitem(service["env"], "DECISIONS_TABLE", "no-such-table")
    response = send(service, [prediction("r1", "ride-fare", 1.0), b"junk"])
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [f"{1:056d}"]
    unavailable = [r.getMessage() for r in caplog.records if "decisions table unavailable" in r.getMessage()]
    assert unavailable and unavailable[0].startswith(
        "decisions table unavailable (ResourceNotFoundException): reading 1 rides: An error occurred"
    ), unavailable


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


# -- faults: every ride gets exactly one decision -----------------------------------------------
def sweep_now(service):
    return service["handler"]({"source": "aws.events"}, FakeContext())


def sweeper(service, store=None, time_left=None, **kwargs):
    """`sweep` itself (what the scheduled handler adapts), on this table and stream."""
    from rides.stream.decision import DecisionConfig, DecisionStore, sweep
    from rides.stream.publish import KinesisPublisher

    return sweep(
        DecisionConfig.from_env(service["env"]),
        store=store or DecisionStore(boto3.client("dynamodb"), "ride-decisions"),
        publisher=KinesisPublisher(service["kinesis"], "ride-decisions"),
        time_left=time_left,
        **kwargs,
    )


def distinct_decisions(service):
    """Decision records after de-duplication by decision_id; a duplicate must be identical."""
    by_id = {}
    for record in decisions(service):
        assert by_id.setdefault(record["decision_id"], record) == record
    return list(by_id.values())


def test_a_timeout_decision_whose_publication_failed_is_published_by_a_later_sweep(service):
    send(service, [prediction("r1", "ride-duration", 20.0)])
    service["clock"].now += 61
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    assert sweep_now(service)["failed"] == 1
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    assert sweep_now(service)["published"] == 0  # not due again yet: the stream processor may still publish
    service["clock"].now += 61
    assert sweep_now(service)["published"] == 1
    [decision] = decisions(service)
    assert decision["ride_id"] == "r1" and decision["reason"] == "timeout"
    assert watches(service) == {}  # out: nothing left for a sweep to repeat
    service["clock"].now += 600
    assert sweep_now(service)["published"] == 0 and len(decisions(service)) == 1


def test_a_stranded_timeout_decision_is_the_sweeps_to_publish_not_a_late_predictions(service):
    send(service, [prediction("r1", "ride-duration", 20.0)])
    service["clock"].now += 61
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    sweep_now(service)
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    assert send(service, [prediction("r1", "ride-tip", 2.0)], start=5) == {"batchItemFailures": []}
    assert decisions(service) == []  # stored, and watched again: the sweep publishes it
    assert decisions_stored(service, "r1").predictions["ride-tip"]["value"] == 2.0
    service["clock"].now += 61
    assert sweep_now(service)["published"] == 1
    [decision] = decisions(service)
    assert decision["reason"] == "timeout" and "ride-tip" not in decision["predictions"]


def test_a_crash_between_storing_and_publishing_a_decision_loses_nothing(service, monkeypatch):
    from rides.stream.decision import service as decision_service

    real = decision_service._publish
    monkeypatch.setattr(decision_service, "_publish", lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed")))
    batch = complete_ride("r7")
    with pytest.raises(SystemExit):
        send(service, batch)
    monkeypatch.setattr(decision_service, "_publish", real)
    assert decisions(service) == [] and decisions_stored(service, "r7").status == "decided"
    service["clock"].now += 61
    # not the sweep's to publish: a decision the stream made is out of its index (one write per
    # ride); the batch that crashed is retried by Lambda (or redriven), and that publishes it
    assert sweep_now(service)["published"] == 0
    assert send(service, batch) == {"batchItemFailures": []}
    [decision] = decisions(service)
    assert (
        decision["reason"] == "complete"
        and decision["decision_id"] == decisions_stored(service, "r7").decision["decision_id"]
    )


def test_a_crash_between_publishing_and_unwatching_repeats_the_same_decision_id(service, monkeypatch):
    """The sweep's timeout decisions stay watched until the watch item is deleted."""
    from rides.stream.decision.store import DecisionStore, WriteOutcome

    send(service, [prediction("r8", "ride-duration", 10.0)])
    service["clock"].now += 61
    with monkeypatch.context() as patched:
        patched.setattr(DecisionStore, "unwatch", lambda self, keys, time_left=None: WriteOutcome())
        assert sweep_now(service)["published"] == 1
    assert decisions_stored(service, "r8").status == "decided" and watches(service) != {}
    assert sweep_now(service)["published"] == 1
    assert watches(service) == {}
    first, second = decisions(service)
    assert first == second  # the duplicate a downstream consumer drops by decision_id
    assert len(distinct_decisions(service)) == 1


def test_the_sweep_never_overwrites_a_prediction_merged_while_it_decides(service):
    """The late tip is merged between the sweep's read and its write: the sweep's conditional
    write loses, nobody publishes two different decisions, and the tip stays stored."""
    from rides.stream.decision import DecisionStore

    send(service, [prediction("r2", "ride-duration", 20.0), prediction("r2", "ride-fare", 20.0)])
    service["clock"].now += 61

    class RacedStore(DecisionStore):
        raced = False

        def get_many(self, ride_ids, time_left=None):
            states = super().get_many(ride_ids, time_left)
            if not RacedStore.raced:
                RacedStore.raced = True
                send(service, [prediction("r2", "ride-tip", 2.0)], start=30)  # completes the ride
            return states

    result = sweeper(service, RacedStore(boto3.client("dynamodb"), "ride-decisions"))
    assert result.timed_out == 0 and result.conflicts == 1
    [decision] = distinct_decisions(service)
    assert decision["reason"] == "complete" and decision["predictions"]["ride-tip"]["value"] == 2.0
    stored = decisions_stored(service, "r2")
    assert stored.predictions["ride-tip"]["value"] == 2.0 and stored.status == "decided"


def test_two_invocations_racing_on_a_new_ride_keep_both_predictions(service, monkeypatch):
    """A `rides redrive` beside the live function: both read the ride before either wrote
    it. The second write finds the ride there (attribute_not_exists fails), reads it again and
    merges: neither prediction is lost and the ride is decided once."""
    from rides.stream.decision import DecisionStore

    real = DecisionStore.get_many
    raced = []

    def get_many(self, ride_ids, *args, **kwargs):
        states = real(self, ride_ids, *args, **kwargs)
        if "r9" in ride_ids and not raced:
            raced.append(1)  # the other invocation writes the new ride between this read and its write
            assert send(service, [prediction("r9", "ride-duration", 12.0)], start=50) == {"batchItemFailures": []}
        return states

    monkeypatch.setattr(DecisionStore, "get_many", get_many)
    others = [prediction("r9", "ride-fare", 15.0, seq=60), prediction("r9", "ride-tip", 2.0, seq=61)]
    assert send(service, others, start=60) == {"batchItemFailures": []}
    stored = decisions_stored(service, "r9")
    assert set(stored.predictions) == {"ride-duration", "ride-fare", "ride-tip"} and stored.status == "decided"
    [decision] = distinct_decisions(service)
    assert decision["reason"] == "complete"


def test_two_invocations_merging_into_a_stored_ride_keep_both_predictions(service, monkeypatch):
    """The optimistic lock: both read version 1 of the ride; the first writes version 2; the
    second's write (expecting 1) fails, it reads again and merges on top."""
    from rides.stream.decision import DecisionStore

    send(service, [prediction("r10", "ride-duration", 12.0)])
    real = DecisionStore.get_many
    raced = []

    def get_many(self, ride_ids, *args, **kwargs):
        states = real(self, ride_ids, *args, **kwargs)
        if "r10" in ride_ids and not raced:
            raced.append(1)
            assert send(service, [prediction("r10", "ride-fare", 15.0, seq=70)], start=70) == {"batchItemFailures": []}
        return states

    monkeypatch.setattr(DecisionStore, "get_many", get_many)
    assert send(service, [prediction("r10", "ride-tip", 2.0, seq=80)], start=80) == {"batchItemFailures": []}
    stored = decisions_stored(service, "r10")
    assert set(stored.predictions) == {"ride-duration", "ride-fare", "ride-tip"} and stored.status == "decided"
    [decision] = distinct_decisions(service)
    assert decision["reason"] == "complete" and set(decision["predictions"]) == set(stored.predictions)


def test_the_sweep_stops_at_its_deadline_and_the_next_sweeps_finish_the_backlog(service):
    rides = [prediction(f"b{i}", "ride-duration", 10.0) for i in range(300)]
    for start in range(0, 300, 50):  # six watch items
        assert send(service, rides[start : start + 50], start=start + 1) == {"batchItemFailures": []}
    service["clock"].now += 61
    calls = {"n": 0}

    def time_left():  # an invocation with time for ~12 checks of the clock
        calls["n"] += 1
        return 12 - calls["n"]

    first = sweeper(service, time_left=time_left)
    assert not first.complete and 0 < first.timed_out < 300
    assert first.published == first.timed_out  # nothing decided is left unpublished by design...
    for _ in range(20):
        calls["n"] = 0
        if sweeper(service, time_left=time_left).complete:
            break
    service["clock"].now += 61  # ...and anything that was is due again
    sweeper(service)
    assert sorted(d["ride_id"] for d in distinct_decisions(service)) == sorted(f"b{i}" for i in range(300))


@pytest.mark.parametrize("value", [1e300, -1e127, 1e-200])
def test_a_prediction_dynamodb_cannot_store_is_dead_lettered_alone(service, value):
    response = send(service, [prediction("ok", "ride-fare", 3.0), prediction("huge", "ride-fare", value)])
    assert response == {"batchItemFailures": []}
    [letter] = drain_queue(service["sqs"], service["dlq"])
    assert "outside the range a decision can store" in letter["error"]
    assert decisions_stored(service, "ok").predictions["ride-fare"]["value"] == 3.0


def merging_fails_for(ride_id, monkeypatch):
    """A bug in merging (a KeyError) for this ride's predictions only."""
    from rides.stream.decision import service as decision_service

    real = decision_service.merged

    def buggy(state, predictions, now, config):
        if predictions[0].ride_id == ride_id:
            raise KeyError("field")
        return real(state, predictions, now, config)

    monkeypatch.setattr(decision_service, "merged", buggy)


def test_a_bug_merging_one_ride_reports_only_its_records_with_the_traceback_logged(service, monkeypatch, caplog):
    merging_fails_for("bad", monkeypatch)
    response = send(service, [prediction("good", "ride-fare", 3.0), prediction("bad", "ride-fare", 4.0)])
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{2:056d}"}]}
    [logged] = [r for r in caplog.records if r.getMessage() == "unexpected error while merging a ride's predictions"]
    assert logged.exc_info[0] is KeyError and logged.positions == [1]
    assert decisions_stored(service, "good") is not None


class Refusing:
    """A DynamoDB client that refuses one operation as IAM would (AccessDeniedException)."""

    def __init__(self, client, operation: str):
        self.client, self.operation = client, operation

    def __getattr__(self, name):
        if name != self.operation:
            return getattr(self.client, name)

        def refused(**request):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDeniedException"}, "ResponseMetadata": {}}, name)

        return refused


class Throttled:
    """A DynamoDB client whose reads come back unprocessed and whose writes are throttled."""

    def __init__(self, client, failures: int):
        self.client, self.failures, self.calls = client, failures, 0

    def batch_get_item(self, RequestItems):
        self.calls += 1
        if self.calls <= self.failures:
            return {"Responses": {}, "UnprocessedKeys": RequestItems}
        return self.client.batch_get_item(RequestItems=RequestItems)

    def put_item(self, **request):
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.calls <= self.failures:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException"}, "ResponseMetadata": {}}, "PutItem"
            )
        return self.client.put_item(**request)


def test_unprocessed_reads_and_throttled_writes_back_off_and_give_up_at_the_deadline(service):
    from rides.stream.decision import DecisionStore, StoreUnavailable
    from rides.stream.decision.service import merged
    from rides.stream.events import PredictionIn
    from rides.stream.retry import Backoff

    slept: list[float] = []

    def backoff(**kwargs):
        return Backoff(sleep=slept.append, rng=lambda: 1.0, **kwargs)

    throttled = Throttled(boto3.client("dynamodb"), failures=3)
    store = DecisionStore(throttled, "ride-decisions", backoff=backoff)
    assert store.get_many(["x"]) == {}
    assert throttled.calls == 4 and slept == [0.05, 0.1, 0.2]  # waits that grow, no hot loop

    throttled.calls, throttled.failures = 0, 1_000
    with pytest.raises(StoreUnavailable) as raised:
        store.get_many(["x"], time_left=lambda: 0.3)
    assert raised.value.code == "UnprocessedKeys" and throttled.calls < 5

    state = merged(None, [PredictionIn("w", "ride-fare", "1", "fare_amount", 1.0, {})], 0.0, DecisionConfig("t", "s"))
    throttled.calls = 0
    outcome = store.save([state], time_left=lambda: 0.3)
    assert outcome.written == [] and outcome.failed == {"w": "RetriesExhausted"} and throttled.calls < 5


def test_the_due_index_spreads_rides_over_its_shards():
    from collections import Counter

    from rides.stream.decision import INDEX_SHARDS, RideState

    shards = Counter(RideState(str(i), 0.0, 0).due_shard for i in range(8_000))
    assert len(shards) == INDEX_SHARDS
    assert max(shards.values()) < 1.2 * 8_000 / INDEX_SHARDS


def test_every_decision_record_carries_a_decision_id_and_the_store_round_trips_a_ride(service):
    from rides.stream.decision import RideState

    batch = complete_ride("r3")
    send(service, batch)
    [decision] = decisions(service)
    stored = decisions_stored(service, "r3")
    assert decision["decision_id"] == stored.decision["decision_id"] == "r3:1"
    assert RideState.from_item(stored.to_item()) == stored


def test_a_rides_state_as_the_web_service_returns_it():
    """GET /predictions/{ride_id}'s body (docs/contracts.md): these keys and no others."""
    from rides.stream.decision import RideState

    predictions = {"ride-duration": {"field": "ride_duration", "value": 11.5, "version": "3"}}
    decision = {"decision": "accept", "decision_id": "r4:1"}
    collecting = RideState("r4", 1_700_000_000.5, 1_700_086_400, predictions=predictions, version=1)
    assert collecting.for_api() == {
        "ride_id": "r4",
        "status": "collecting",
        "predictions": predictions,
        "decision": None,
        "first_seen": 1_700_000_000.5,
    }
    published = collecting.next_version(decision=decision, published=True, shadow={"ride-duration": {}})
    assert published.for_api() == {**collecting.for_api(), "status": "published", "decision": decision}


def test_rides_review_lists_the_queue_once_per_decision_and_removes_only_when_done(service):
    from click.testing import CliRunner

    from rides.cli import main

    long_ride = [prediction("long", m, v) for m, v in (("ride-duration", 90.0), ("ride-fare", 60.0), ("ride-tip", 5.0))]
    send(service, long_ride)
    [decision] = decisions(service)
    # a repeat of the same decision (a retry after a queue failure) is listed once
    service["sqs"].send_message(QueueUrl=service["review"], MessageBody=json.dumps(decision))
    runner = CliRunner()
    listed = runner.invoke(main, ["review", "--queue-url", service["review"]])
    assert listed.exit_code == 0, listed.output
    assert "1 rides to review" in listed.output and "ride long: long_ride" in listed.output
    assert "ride_duration 90.00 (v1)" in listed.output
    again = runner.invoke(main, ["review", "--queue-url", service["review"], "--done"])
    assert "1 rides to review (removed from the queue)" in again.output
    assert "0 rides to review" in runner.invoke(main, ["review", "--queue-url", service["review"]]).output


def test_a_decided_ride_with_a_challengers_prediction_is_one_write_unit():
    """The item's size by DynamoDB's rules (rides.local.meter): under 1 KB, so each write of a
    ride costs one write unit, not two (a 26-character ride id, full-precision values)."""
    from rides.local.meter import item_size, write_units
    from rides.stream.decision.service import merged
    from rides.stream.events import prediction_from

    ride_id = "2021-02-17T08:15:00-000123"
    values = {m: 12.345678901234567 for m in FIELDS}
    predictions = [
        prediction_from({**prediction(ride_id, m, v), "version": "123", "role": "production"})
        for m, v in values.items()
    ] + [
        prediction_from(
            {**prediction(ride_id, "ride-duration", 11.234567890123456), "version": "124", "role": "shadow"}
        )
    ]
    state = merged(None, predictions, 1_700_000_000.123456, DecisionConfig.from_env({}))
    assert state.status == "decided" and state.shadow
    assert write_units(item_size(state.to_item())) == 1


def test_a_ride_split_over_two_batches_is_two_writes_and_never_in_the_index(service):
    """What a split ride costs: the batch that starts it writes one watch item for all the
    rides it starts (one index entry), then the ride; the batch that completes it writes the
    ride once more. Neither write of the ride touches the index."""
    dynamodb = boto3.client("dynamodb")
    starts = [prediction(f"s{i}", "ride-duration", 10.0 + i) for i in range(20)]
    assert send(service, starts) == {"batchItemFailures": []}
    [listed] = watches(service).values()
    assert sorted(listed) == sorted(f"s{i}" for i in range(20))
    rest = [prediction(f"s{i}", m, v) for i in range(20) for m, v in (("ride-fare", 12.0), ("ride-tip", 1.0))]
    assert send(service, rest, start=100) == {"batchItemFailures": []}
    items = dynamodb.scan(TableName="ride-decisions")["Items"]
    rides = [i for i in items if not i["ride_id"]["S"].startswith("watch#")]
    assert len(rides) == 20 and all("due_at" not in i and "due_shard" not in i for i in rides)
    assert {i["version"]["N"] for i in rides} == {"2"}  # two writes a ride
    assert len(distinct_decisions(service)) == 20
    # the sweep, once they are due: the watch item read, its rides all decided, it is deleted
    service["clock"].now += 61
    assert sweep_now(service)["timed_out"] == 0 and watches(service) == {}


def test_a_ride_is_never_stored_collecting_without_its_watch(service, monkeypatch):
    """The watch item is written first: if it cannot be, the rides are not written and their
    records are reported (retried by Lambda)."""
    from rides.stream.decision import DecisionStore

    def refused(self, *args, **kwargs):
        return "AccessDeniedException"

    with monkeypatch.context() as patched:
        patched.setattr(DecisionStore, "watch", refused)
        response = send(service, [prediction("u1", "ride-duration", 10.0), prediction("u2", "ride-fare", 9.0)])
    assert len(response["batchItemFailures"]) == 2
    assert decisions_stored(service, "u1") is None and decisions_stored(service, "u2") is None
    assert send(service, [prediction("u1", "ride-duration", 10.0)]) == {"batchItemFailures": []}
    assert list(watches(service).values()) == [["u1"]]


def store_old_way(service, ride_id: str, *, first_seen: float, due_at: float, decided_at: float | None = None):
    """A ride as a previous version stored it: in the due index itself (due_at), collecting or,
    with decided_at, decided by a timeout and not yet published."""
    from rides.stream.decision import DecisionConfig, DecisionStore
    from rides.stream.decision.service import decided
    from rides.stream.decision.store import RideState

    field = {"field": "ride_duration", "value": 10.0, "version": "1"}
    state = RideState(ride_id, first_seen, int(service["clock"].now + 86400), {"ride-duration": field}, version=1)
    if decided_at is not None:
        state = decided(state, DecisionConfig.from_env(service["env"]), "timeout", decided_at)
    state = RideState(**{**state.__dict__, "due_at": due_at, "version": 1})
    assert len(DecisionStore(boto3.client("dynamodb"), "ride-decisions").save([state]).written) == 1


def test_rides_a_previous_version_put_in_the_index_are_still_timed_out_and_marked(service):
    """Collecting rides stored with due_shard/due_at before watch items, and a timeout decision
    not yet published: the sweep decides, publishes and takes them out of the index."""
    now = service["clock"].now
    store_old_way(service, "old1", first_seen=now, due_at=now + 60)
    store_old_way(service, "old2", first_seen=now - 100, due_at=now - 1, decided_at=now)  # in the index until marked
    service["clock"].now += 61
    result = sweep_now(service)
    assert (result["timed_out"], result["published"]) == (1, 2)
    assert sorted(d["ride_id"] for d in distinct_decisions(service)) == ["old1", "old2"]
    assert all(decisions_stored(service, r).due_at is None for r in ("old1", "old2"))
    service["clock"].now += 600
    assert sweep_now(service)["published"] == 0 and len(decisions(service)) == 2


def test_a_batch_starting_many_long_ride_ids_is_watched_in_items_dynamodb_takes(service):
    """10,000 records a batch (the mapping's maximum), ride ids up to 256 characters: one list
    would be 2.6 MB, and DynamoDB refuses items over 400 KB."""
    from rides.stream.decision import DecisionStore

    store = DecisionStore(boto3.client("dynamodb"), "ride-decisions")
    ride_ids = [f"{i:0256d}" for i in range(3_000)]
    assert store.watch(ride_ids, 1e9, 2_000_000_000) is None
    listed = watches(service)
    assert len(listed) >= 8 and sorted(r for rides in listed.values() for r in rides) == ride_ids


def test_a_rule_at_its_limit_does_not_fire_and_a_ratio_on_its_bounds_is_in_range():
    at_most = Rule(flag="long", type="max", field="ride_duration", value=60)
    at_least = Rule(flag="short", type="min", field="ride_duration", value=2)
    assert [at_most.fires({"ride_duration": v}) for v in (59.9, 60, 60.1)] == [False, False, True]
    assert [at_least.fires({"ride_duration": v}) for v in (1.9, 2, 2.1)] == [True, False, False]
    per_minute = Rule(
        flag="fare", type="ratio_range", numerator="fare_amount", denominator="ride_duration", min=0.5, max=5
    )
    for fare, fires in ((5.0, False), (50.0, False), (4.9, True), (50.1, True)):  # bounds included
        assert per_minute.fires({"fare_amount": fare, "ride_duration": 10.0}) is fires
    assert per_minute.fires({"fare_amount": 5.0, "ride_duration": 1.0}) is False  # a ratio of 5: on the bound
    # a ratio that cannot be taken is a rule not evaluated, never an error
    for values in ({"fare_amount": 5.0}, {"ride_duration": 10.0}, {"fare_amount": 5.0, "ride_duration": 0.0}):
        assert per_minute.fires(values) is None


def test_a_pages_watch_items_are_grouped_whole_by_about_a_hundred_rides():
    from rides.stream.decision.service import _groups

    watches = {"w1": ["a"] * 60, "w2": ["b"] * 40, "w3": ["c"]}
    assert list(_groups(["i1"], watches, size=100)) == [
        ([], {"w1": ["a"] * 60, "w2": ["b"] * 40}),  # 100 rides: full, not over
        (["i1"], {"w3": ["c"]}),  # the indexed rides go with the last group
    ]
    assert list(_groups([], {"w1": ["a"] * 150, "w2": ["b"]}, size=100)) == [
        ([], {"w1": ["a"] * 150}),
        ([], {"w2": ["b"]}),
    ]
    assert list(_groups([], {f"w{i}": ["r"] for i in range(101)})) == [
        ([], {f"w{i}": ["r"] for i in range(100)}),  # a hundred by default
        ([], {"w100": ["r"]}),
    ]
    assert list(_groups([], {"w1": ["a"] * 150, "w2": ["b"] * 50, "w3": ["c"] * 50}, size=100)) == [
        ([], {"w1": ["a"] * 150}),
        ([], {"w2": ["b"] * 50, "w3": ["c"] * 50}),  # counted from 0 again after a group
    ]
    assert list(_groups(["i1"], {})) == [(["i1"], {})]
    assert list(_groups([], {})) == []


def test_a_ride_is_timed_out_at_exactly_its_timeout_and_decided_at_the_sweeps_time(service):
    started = service["clock"].now
    send(service, [prediction("t1", "ride-duration", 20.0)])
    service["clock"].now = started + 59  # a second early: nothing due
    assert sweeper(service).timed_out == 0
    service["clock"].now = started + 60  # DECISION_TIMEOUT_SECONDS: due now, not a second later
    assert sweeper(service).timed_out == 1
    [decision] = decisions(service)
    assert decision["reason"] == "timeout" and decision["decided_at"] == started + 60


def test_a_decision_a_previous_version_indexed_is_published_when_exactly_due(service):
    now = service["clock"].now
    store_old_way(service, "old3", first_seen=now - 100, due_at=now, decided_at=now - 40)
    assert sweeper(service).published == 1
    assert [d["ride_id"] for d in decisions(service)] == ["old3"]


def store_running_out(when: str):
    """A store, and the time left of an invocation that runs out of time when the store starts
    reading ("read"), has read ("after read") or has saved ("after save")."""
    from rides.stream.decision import DecisionStore

    out = {"of_time": False}

    class Store(DecisionStore):
        def get_many(self, ride_ids, time_left=None, **kwargs):
            out["of_time"] |= when == "read"
            states = super().get_many(ride_ids, time_left, **kwargs)
            out["of_time"] |= when == "after read"
            return states

        def save(self, states, time_left=None):
            outcome = super().save(states, time_left)
            out["of_time"] |= when == "after save"
            return outcome

    return Store(boto3.client("dynamodb"), "ride-decisions"), lambda: 0.0 if out["of_time"] else 100.0


def test_a_sweep_out_of_time_as_it_reads_changes_nothing(service):
    send(service, [prediction("d1", "ride-duration", 20.0)])
    before = watches(service)
    service["clock"].now += 61
    result = sweeper(service, *store_running_out("read"))
    assert not result.complete and result.timed_out == 0
    stored = decisions_stored(service, "d1")
    assert (stored.status, stored.version) == ("collecting", 1)
    assert watches(service) == before  # no new watch item: the same one, done next time
    assert sweeper(service).timed_out == 1


def test_a_sweep_out_of_time_once_it_has_read_decides_nothing(service):
    send(service, [prediction("d2", "ride-duration", 20.0)])
    service["clock"].now += 61
    result = sweeper(service, *store_running_out("after read"))
    assert not result.complete and result.timed_out == 0
    assert decisions_stored(service, "d2").status == "collecting" and decisions(service) == []
    service["clock"].now += 61
    assert sweeper(service).timed_out == 1


def test_a_sweep_out_of_time_after_deciding_publishes_later_with_the_same_decision_id(service):
    send(service, [prediction("d3", "ride-duration", 20.0)])
    service["clock"].now += 61
    result = sweeper(service, *store_running_out("after save"))
    assert (result.timed_out, result.published, result.failed) == (1, 0, 1)
    assert decisions(service) == [] and decisions_stored(service, "d3").status == "decided"
    service["clock"].now += 61  # watched again, due a timeout later
    assert sweeper(service).published == 1
    [decision] = decisions(service)
    assert decision["decision_id"] == decisions_stored(service, "d3").decision["decision_id"]


def watches_in_one_shard(monkeypatch):
    """Watch keys that all fall in the index's shard 0: one page of the sweep, so that two
    watch items of 60 rides are two groups of that page (random keys spread over the shards,
    a page each)."""
    from rides.stream.decision import store

    random_key = store.watch_key

    def in_shard_zero():
        while store.due_shard(key := random_key()) != "0":
            pass
        return key

    monkeypatch.setattr(store, "watch_key", in_shard_zero)


def test_a_sweep_counts_every_groups_failures_and_conflicts(service, monkeypatch):
    """Two watch items of 60 rides in one page: two groups of the sweep, each adding to the
    one result."""
    from rides.stream.decision import DecisionStore

    watches_in_one_shard(monkeypatch)
    for batch in range(2):
        rides = [prediction(f"g{batch}-{i}", "ride-duration", 10.0) for i in range(60)]
        assert send(service, rides, start=1 + 60 * batch) == {"batchItemFailures": []}
    service["clock"].now += 61

    class Raced(DecisionStore):  # each ride's tip merged by the stream between read and write
        def get_many(self, ride_ids, time_left=None, **kwargs):
            states = super().get_many(ride_ids, time_left, **kwargs)
            tips = [prediction(r, "ride-tip", 1.0) for r in ride_ids]
            assert send(service, tips, start=1_000) == {"batchItemFailures": []}
            return states

    raced = sweeper(service, Raced(boto3.client("dynamodb"), "ride-decisions"))
    assert (raced.conflicts, raced.timed_out) == (120, 0)
    service["clock"].now += 61
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    unpublished = sweeper(service)
    assert (unpublished.timed_out, unpublished.failed, unpublished.published) == (120, 120, 0)


def test_a_table_refusing_the_sweeps_read_is_an_error_not_a_quiet_stop(service):
    from rides.stream.decision import DecisionStore, StoreUnavailable

    send(service, [prediction("e1", "ride-duration", 20.0)])
    service["clock"].now += 61
    with pytest.raises(StoreUnavailable) as refused:
        sweeper(service, DecisionStore(Refusing(boto3.client("dynamodb"), "batch_get_item"), "ride-decisions"))
    assert refused.value.code == "AccessDeniedException"


def test_a_sweep_that_cannot_watch_again_stops_and_keeps_its_watch_items(service, monkeypatch):
    """Two groups; the first's decisions cannot be published and its rides cannot be watched
    again: the sweep stops there, deletes no watch item, and a later sweep does all of it."""
    from rides.stream.decision import DecisionStore

    for batch in range(2):
        rides = [prediction(f"k{batch}-{i}", "ride-duration", 10.0) for i in range(60)]
        assert send(service, rides, start=1 + 60 * batch) == {"batchItemFailures": []}
    before = watches(service)
    service["clock"].now += 61
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    with monkeypatch.context() as patched:
        patched.setattr(DecisionStore, "watch", lambda self, *args, **kwargs: "AccessDeniedException")
        stopped = sweeper(service)
    assert stopped.complete is False and (stopped.timed_out, stopped.failed) == (60, 60)
    assert watches(service) == before
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    assert sweeper(service).published == 120
    assert len(distinct_decisions(service)) == 120 and watches(service) == {}


def test_an_old_way_rides_timeout_decision_that_could_not_be_published_is_published_later(service):
    """Deciding takes the ride out of the index: if its publication fails, only the watch item
    the sweep writes for it brings it back."""
    now = service["clock"].now
    store_old_way(service, "old4", first_seen=now - 60, due_at=now)
    service["kinesis"].delete_stream(StreamName="ride-decisions")
    assert sweeper(service).failed == 1
    assert decisions_stored(service, "old4").due_at is None
    service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
    service["clock"].now += 61
    assert sweeper(service).published == 1
    assert [d["ride_id"] for d in decisions(service)] == ["old4"]


def test_two_sweeps_overlapping_on_an_old_way_ride_publish_one_decision(service):
    """A second sweep decides the ride between the first one's look at the index and its read,
    and cannot publish it: the first leaves it to the second's watch item."""
    from rides.stream.decision import DecisionStore

    now = service["clock"].now
    store_old_way(service, "old5", first_seen=now - 60, due_at=now)

    class Overlapped(DecisionStore):
        def get_many(self, ride_ids, time_left=None, **kwargs):
            service["kinesis"].delete_stream(StreamName="ride-decisions")
            assert sweeper(service).failed == 1  # the other sweep: decided, not out, watched
            service["kinesis"].create_stream(StreamName="ride-decisions", ShardCount=1)
            return super().get_many(ride_ids, time_left, **kwargs)

    first = sweeper(service, Overlapped(boto3.client("dynamodb"), "ride-decisions"))
    assert (first.timed_out, first.published, first.failed) == (0, 0, 0)
    service["clock"].now += 61
    assert sweeper(service).published == 1
    assert [d["ride_id"] for d in distinct_decisions(service)] == ["old5"]


class Recording:
    """A DynamoDB client that lists the calls made through it and, once a due-index query has
    answered with keys, says the invocation is out of time (`time_left`)."""

    def __init__(self, client):
        self.client, self.calls, self.out_of_time = client, [], False

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(**request):
            self.calls.append(name)
            response = method(**request)
            self.out_of_time |= name == "query" and bool(response.get("Items"))
            return response

        return call

    def time_left(self) -> float:
        return 0.0 if self.out_of_time else 100.0


def test_a_sweep_with_no_time_left_makes_no_call(service):
    from rides.stream.decision import DecisionStore

    send(service, [prediction("n1", "ride-duration", 20.0)])
    service["clock"].now += 61
    recording = Recording(boto3.client("dynamodb"))
    result = sweeper(service, DecisionStore(recording, "ride-decisions"), lambda: 0.0)
    assert result.complete is False and recording.calls == []


def test_a_sweep_out_of_time_once_the_index_answered_makes_no_further_call(service):
    from rides.stream.decision import DecisionStore

    send(service, [prediction("n2", "ride-duration", 20.0)])
    service["clock"].now += 61
    recording = Recording(boto3.client("dynamodb"))
    result = sweeper(service, DecisionStore(recording, "ride-decisions"), recording.time_left)
    assert result.complete is False and result.timed_out == 0
    assert set(recording.calls) == {"query"} and recording.out_of_time  # not even the watch item read
    assert decisions_stored(service, "n2").status == "collecting"


def process(service, predictions, store=None, time_left=None, **kwargs):
    """process_predictions itself (what the handler adapts): → (Lambda's answer, the report)."""
    from rides.stream.deadletter import DeadLetterSink
    from rides.stream.decision import DecisionConfig, DecisionStore, process_predictions
    from rides.stream.publish import KinesisPublisher

    records = [kinesis_record(p, 1 + i) for i, p in enumerate(predictions)]
    return process_predictions(
        records,
        DecisionConfig.from_env(service["env"]),
        store=store or DecisionStore(boto3.client("dynamodb"), "ride-decisions"),
        publisher=KinesisPublisher(service["kinesis"], "ride-decisions"),
        dead_letters=DeadLetterSink(service["sqs"], service["dlq"]),
        time_left=time_left,
        **kwargs,
    )


def test_the_report_counts_the_batchs_records_and_what_was_done(service):
    batch = complete_ride("c1") + complete_ride("c3")
    answer, report = process(service, [*batch, prediction("c2", "ride-duration", 9.0)])
    assert answer == {"batchItemFailures": []}
    assert (report.records, report.stored, report.decided, report.published) == (7, 3, 2, 2)


def test_a_batch_with_no_time_left_writes_nothing_and_hands_every_record_back(service):
    from rides.stream.decision import DecisionStore

    recording = Recording(boto3.client("dynamodb"))
    complete = complete_ride("z1")
    answer, report = process(
        service,
        [*complete, prediction("z2", "ride-duration", 9.0)],
        DecisionStore(recording, "ride-decisions"),
        lambda: 0.0,
    )
    assert len(answer["batchItemFailures"]) == 4 and report.errors == {"DeadlinePassed": 4}
    assert recording.calls == []
    assert decisions_stored(service, "z1") is None and decisions(service) == []


def test_a_batch_out_of_time_once_it_has_read_writes_no_watch_and_no_ride(service):
    """The watch item is the first write of a collecting ride: with no time for it, neither it
    nor the ride is written, and the records go back to Lambda under the reason."""
    store, time_left = store_running_out("after read")
    answer, report = process(service, [prediction("z3", "ride-duration", 9.0)], store, time_left)
    assert len(answer["batchItemFailures"]) == 1 and report.errors == {"DeadlinePassed": 1}
    assert decisions_stored(service, "z3") is None and watches(service) == {}


def test_the_batchs_log_is_the_callers_logger(service, monkeypatch, caplog):
    """The handler passes its Powertools logger: an unexpected error is logged through it."""
    import logging

    merging_fails_for("bad", monkeypatch)
    process(service, [prediction("bad", "ride-fare", 4.0)], logger=logging.getLogger("rides.tests.decisions"))
    [logged] = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert logged.name == "rides.tests.decisions"


def test_a_shadow_alone_is_not_watched_and_a_production_prediction_after_it_is(service):
    """A challenger's prediction decides nothing: its ride is stored without a watch. The first
    production prediction starts the ride's timeout: watched then, and timed out by the sweep."""
    shadow = {**prediction("s1", "ride-duration", 11.0), "version": "2", "role": "shadow"}
    assert send(service, [shadow]) == {"batchItemFailures": []}
    assert decisions_stored(service, "s1").shadow and watches(service) == {}
    assert send(service, [prediction("s1", "ride-fare", 12.0)], start=2) == {"batchItemFailures": []}
    assert list(watches(service).values()) == [["s1"]]
    service["clock"].now += 61
    assert sweeper(service).timed_out == 1


def test_a_new_ride_complete_in_its_batch_is_written_once_without_a_read(service):
    """The cost design (docs/design-notes.md): every required prediction in one batch is one
    conditional write, no read first. A challenger's prediction does not count towards it."""
    from rides.stream.decision import DecisionStore

    recording = Recording(boto3.client("dynamodb"))
    complete = complete_ride("w1")
    answer, report = process(service, complete, DecisionStore(recording, "ride-decisions"))
    assert answer == {"batchItemFailures": []} and report.decided == 1
    assert recording.calls == ["put_item"]
    shadow_tip = {**prediction("w2", "ride-tip", 1.0), "role": "shadow"}
    batch = [prediction("w2", "ride-duration", 10.0), prediction("w2", "ride-fare", 10.0), shadow_tip]
    answer, report = process(service, batch)
    assert answer == {"batchItemFailures": []} and report.decided == 0
    assert decisions_stored(service, "w2").status == "collecting"


def test_a_late_challengers_prediction_does_not_publish_the_decision_again(service):
    complete = complete_ride("l1")
    assert send(service, complete) == {"batchItemFailures": []}
    late = {**prediction("l1", "ride-duration", 12.0), "version": "2", "role": "shadow"}
    assert send(service, [late], start=10) == {"batchItemFailures": []}
    assert len(decisions(service)) == 1 and decisions_stored(service, "l1").shadow


def test_a_decision_stored_with_no_time_left_to_publish_goes_back_to_lambda_and_out_once(service):
    complete = complete_ride("p1")
    answer, report = process(service, complete, *store_running_out("after save"))
    assert len(answer["batchItemFailures"]) == 3 and report.errors == {"PublishFailed": 3}
    assert decisions(service) == [] and decisions_stored(service, "p1").status == "decided"
    assert process(service, complete)[0] == {"batchItemFailures": []}  # Lambda's retry
    [decision] = decisions(service)
    assert decision["decision_id"] == decisions_stored(service, "p1").decision["decision_id"]


def test_a_new_ride_whose_one_write_is_refused_hands_its_records_back(service):
    from rides.stream.decision import DecisionStore

    complete = complete_ride("q1")
    recording = Recording(Refusing(boto3.client("dynamodb"), "put_item"))
    answer, report = process(service, complete, DecisionStore(recording, "ride-decisions"))
    assert len(answer["batchItemFailures"]) == 3 and report.errors == {"AccessDeniedException": 3}
    assert recording.calls == ["put_item"]  # a refusal is not retried, nor the ride read and merged
    assert decisions_stored(service, "q1") is None and decisions(service) == []


def test_a_bug_deciding_a_complete_new_ride_reports_only_its_records_with_the_traceback(service, monkeypatch, caplog):
    from rides.stream.decision import DecisionStore

    merging_fails_for("bad", monkeypatch)
    batch = complete_ride("good") + complete_ride("bad")
    recording = Recording(boto3.client("dynamodb"))
    answer, report = process(service, batch, DecisionStore(recording, "ride-decisions"))
    assert len(answer["batchItemFailures"]) == 3 and report.errors == {"KeyError": 3}
    assert recording.calls == ["put_item"]  # the good ride's one write; the bad one is not tried again
    [logged] = [r for r in caplog.records if r.getMessage() == "unexpected error while merging a ride's predictions"]
    assert logged.exc_info[0] is KeyError and logged.positions == [3, 4, 5] and logged.records == 3
    assert [d["ride_id"] for d in decisions(service)] == ["good"] and decisions_stored(service, "bad") is None


def test_a_poison_record_with_no_time_left_is_handed_back_not_dead_lettered(service):
    answer, report = process(service, [{"not": "a prediction"}], time_left=lambda: 0.0)
    assert len(answer["batchItemFailures"]) == 1 and report.dead_lettered == 0
    assert drain_queue(service["sqs"], service["dlq"]) == []


def test_a_bug_merging_the_first_ride_of_a_batch_holds_up_none_after_it(service, monkeypatch):
    merging_fails_for("bad", monkeypatch)
    answer, report = process(service, [prediction("bad", "ride-fare", 4.0), prediction("after", "ride-fare", 3.0)])
    assert len(answer["batchItemFailures"]) == 1 and report.errors == {"KeyError": 1}
    assert decisions_stored(service, "after") is not None


def test_a_ride_completed_over_two_batches_is_counted_decided_by_the_second(service):
    first, _ = process(service, [prediction("m1", "ride-duration", 10.0), prediction("m1", "ride-fare", 10.0)])
    assert first == {"batchItemFailures": []}
    answer, report = process(service, [prediction("m1", "ride-tip", 1.0)])
    assert answer == {"batchItemFailures": []} and (report.stored, report.decided, report.published) == (1, 1, 1)
