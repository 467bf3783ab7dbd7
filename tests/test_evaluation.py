"""Live evaluation: outcomes joined with the predictions the decision service stored, in any
order, delivered again, before their ride's decision or across many hours, give the same
figures as an offline computation on the same rides; each ride counts once."""

from __future__ import annotations

import json
import math
import random
import re
from datetime import datetime, timedelta

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from rides.local.stack import decisions_table_spec, evaluations_table_spec
from rides.stream.deadletter import DeadLetterSink
from rides.stream.decision import DecisionConfig, DecisionStore
from rides.stream.decision.service import merged
from rides.stream.evaluation.drift import DriftCounter, counts, psi, reference
from rides.stream.evaluation.metrics import Summary, summarize
from rides.stream.evaluation.service import EvaluationConfig, process_records, sweep
from rides.stream.evaluation.store import RESOLVE_PARTIAL_AFTER_SECONDS, EvaluationStore
from rides.stream.events import completion_from, completion_json, prediction_from
from tests.helpers import kinesis_record

CONFIG = EvaluationConfig("ride-evaluations", decisions_table="ride-decisions")
NOW = 1_764_000_000.0
FIELDS = {"ride-duration": "ride_duration", "ride-fare": "fare_amount", "ride-tip": "tip_amount"}


@pytest.fixture
def store(aws):
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**evaluations_table_spec("ride-evaluations"))
    dynamodb.create_table(**decisions_table_spec("ride-decisions"))
    # Every sweep reads every waiting ride (interval 0): these tests are about what is joined,
    # not when; the read schedule (1, 2, 4… intervals) has its own tests below.
    return EvaluationStore(dynamodb, "ride-evaluations", decisions_table="ride-decisions", sweep_interval_seconds=0)


def prediction(ride_id, value, version="1", role="production", model="ride-duration"):
    record = {"model": model, "version": version, "prediction": {"ride_id": ride_id, FIELDS[model]: value}}
    if role != "production":
        record["role"] = role
    return record


def decide(store, payloads, required=("ride-duration",)):
    """Store rides' predictions as the decision service does (merged into each ride's item,
    decided once every required model's prediction is there)."""
    config = DecisionConfig.from_env({"REQUIRED_MODELS": ",".join(required)})
    rides = DecisionStore(store.client, "ride-decisions")
    by_ride: dict[str, list] = {}
    for payload in payloads:
        p = prediction_from(payload)
        by_ride.setdefault(p.ride_id, []).append(p)
    for ride_id, predictions in by_ride.items():
        state = merged(rides.get(ride_id), predictions, NOW, config)
        assert not rides.save([state]).failed


def completion(ride_id, minutes, dropoff=datetime(2021, 2, 3, 8, 30), fare=None):
    return completion_json(ride_id, dropoff, duration_minutes=minutes, fare_amount=fare)


def deliver(store, payloads, start=1, now=NOW, shard="shardId-000000000000"):
    """One batch, as Lambda delivers it (records numbered from `start` on one shard)."""
    records = [kinesis_record(p, start + i, shard=shard) for i, p in enumerate(payloads)]
    return process_records(
        records, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(None, None), clock=lambda: now
    )


def feed(store, payloads, batch_size=37, now=NOW, start=1):
    """Through the consumer in batches; → the pairs evaluated."""
    evaluated = []
    for first in range(0, len(payloads), batch_size):
        response, report = deliver(store, payloads[first : first + batch_size], start + first, now)
        assert response == {"batchItemFailures": []}
        evaluated += report.evaluated
    return evaluated


def test_any_order_redeliveries_and_early_outcomes_give_the_offline_figures(store):
    rng = random.Random(7)
    rides = [(f"r{i}", rng.uniform(3, 50)) for i in range(300)]
    v1 = {ride: actual + rng.gauss(0, 4) for ride, actual in rides}
    v2 = {ride: actual + rng.gauss(1, 6) for ride, actual in rides}
    early = {ride for ride, _ in rides[:40]}  # outcomes that come before their ride's decision
    decide(store, [prediction(r, v1[r]) for r, _ in rides if r not in early])
    decide(store, [prediction(r, v2[r], version="2", role="shadow") for r, _ in rides])  # the challenger, after
    completions = [
        completion(r, a, dropoff=datetime(2021, 2, 3, 8) + timedelta(minutes=i)) for i, (r, a) in enumerate(rides)
    ]
    rng.shuffle(completions)
    live = feed(store, completions[:148])
    live += feed(store, completions[148:], now=NOW + 3600, start=149)  # an hour later
    live += feed(store, completions[:100], now=NOW + 3600)  # Lambda delivers the first batches again
    assert store.waiting() == 40
    decide(store, [prediction(r, v1[r]) for r, _ in rides if r in early])
    swept = sweep(CONFIG, store=store, clock=lambda: NOW + 7200)
    live += swept.evaluated
    assert store.waiting() == 0 and swept.waiting == 0

    actual = dict(rides)
    for version, predicted, role in (("1", v1, "production"), ("2", v2, "shadow")):
        mine = [e for e in live if e.version == version]
        assert len(mine) == len({e.ride_id for e in mine}) == 300  # each ride exactly once
        assert {e.role for e in mine} == {role}
        offline = Summary.of(predicted[r] - actual[r] for r, _ in rides)
        online = store.summary("ride-duration", version, role)
        assert online.count == offline.count == store.count("ride-duration", version, role) == 300
        for name in ("rmse", "mae", "bias"):
            assert getattr(online, name) == pytest.approx(getattr(offline, name), rel=1e-12)
        assert summarize(mine).rmse == pytest.approx(offline.rmse, rel=1e-12)  # the metrics emitted
    # per hour counted: the two feeds' and the sweep's
    hours = store.hours("ride-duration", "1", "production")
    assert sum(s.count for s in hours.values()) == 300 and len(hours) == 3
    # the same rides compared (every ride has both), and what has been evaluated
    challenger, incumbent = store.paired("ride-duration", "2", "1")
    assert challenger.count == incumbent.count == 300
    assert challenger.rmse == pytest.approx(Summary.of(v2[r] - a for r, a in rides).rmse, rel=1e-12)
    assert sorted(store.versions()) == [("ride-duration", "1", "production"), ("ride-duration", "2", "shadow")]


def test_each_field_pairs_with_its_own_outcome_and_a_ride_counts_once(store):
    decide(store, [prediction("a", 10.0), prediction("a", 12.0, model="ride-fare")])
    evaluated = feed(store, [completion("a", 11.0, fare=15.0), completion("a", 11.0, fare=15.0)])
    assert sorted((e.model, e.error) for e in evaluated) == [("ride-duration", -1.0), ("ride-fare", -3.0)]
    # the same records again (Lambda's retry): nothing new
    assert feed(store, [completion("a", 11.0, fare=15.0), completion("a", 11.0, fare=15.0)]) == []
    decide(store, [prediction("b", 5.0)])
    assert feed(store, [completion("b", 5.0, fare=None)], start=10)[0].error == 0.0
    assert store.count("ride-duration", "1", "production") == 2 and store.count("ride-fare", "1", "production") == 1
    # production only: nothing to compare
    assert store.paired("ride-duration", "2", "1")[0].count == 0


def test_bad_records_are_dead_letters_and_a_missing_table_reports_the_records(aws):
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    store = EvaluationStore(boto3.client("dynamodb"), "no-such-table", decisions_table="no-such-table")
    records = [
        kinesis_record(b"{not json", 1),
        kinesis_record({"type": "ride-completed", "ride_id": "x"}, 2),
        kinesis_record(completion("r1", 3.0), 3),
        kinesis_record({"something": "else"}, 4),
        kinesis_record(prediction("r1", 3.0), 5),  # the old mapping's: done as it is
    ]
    response, report = process_records(
        records, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(aws["sqs"], dlq)
    )
    # the completion is retried (the table is missing); the three unreadable ones are letters
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{3:056d}"}]}
    assert report.dead_lettered == 3 and report.predictions == 1


def test_outcomes_of_many_versions_take_several_transactions_and_count_once(store):
    """More sums than one transaction takes (100 items): the batch is cut in chunks, each with
    the shard's mark; a retry after the second chunk failed counts only what was not."""
    rides = [(f"h{i}", 10.0 + i % 5) for i in range(150)]
    decide(store, [prediction(r, a + 2.0, version=str(i)) for i, (r, a) in enumerate(rides)])
    completions = [completion(r, a) for r, a in rides]
    real = store.client.transact_write_items
    calls = []

    def second_fails(**kwargs):
        calls.append(len(kwargs["TransactItems"]))
        if len(calls) == 2:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "injected"}}, "TransactWriteItems")
        return real(**kwargs)

    store.client.transact_write_items = second_fails
    response, report = deliver(store, completions)
    failed = [int(f["itemIdentifier"]) for f in response["batchItemFailures"]]
    assert calls[0] == 100 and min(failed) == 100  # 99 hours + the mark in the first: ride 100 on is retried
    assert len(report.evaluated) == 99
    store.client.transact_write_items = real
    response, report = deliver(store, completions)  # Lambda's retry (here: the whole batch)
    assert response == {"batchItemFailures": []} and len(report.evaluated) == 51
    assert sum(store.count("ride-duration", str(i), "production") for i in range(150)) == 150
    assert {store.summary("ride-duration", str(i), "production").bias for i in (0, 99, 100, 149)} == {2.0}


def test_a_transaction_that_went_through_but_whose_answer_was_lost_counts_once(store):
    """The call times out after DynamoDB applied it: the retry finds the mark moved, reads it
    again and skips what was counted."""
    decide(store, [prediction(f"t{i}", 10.0) for i in range(5)])
    real = store.client.transact_write_items
    lost = []

    def applied_then_lost(**kwargs):
        real(**kwargs)
        if not lost:
            lost.append(1)
            raise ClientError({"Error": {"Code": "RequestTimeout", "Message": "lost"}}, "TransactWriteItems")

    store.client.transact_write_items = applied_then_lost
    response, _ = deliver(store, [completion(f"t{i}", 9.0) for i in range(5)])
    assert response == {"batchItemFailures": []}
    assert store.count("ride-duration", "1", "production") == 5


def test_waiting_outcomes_are_joined_by_the_sweep_once_and_dropped_after_the_window(store):
    feed(store, [completion("w1", 10.0), completion("w2", 12.0)])
    assert store.waiting() == 2 and store.count("ride-duration", "1", "production") == 0
    assert sweep(CONFIG, store=store, clock=lambda: NOW + 10).evaluated == []  # nothing decided yet
    decide(store, [prediction("w1", 11.0)])
    # w1 without w2 once the item has waited long enough; two sweeps at once: the waiting
    # item's version lets one of them count it
    later = NOW + RESOLVE_PARTIAL_AFTER_SECONDS
    first = store.sweep(now=later)
    second = EvaluationStore(store.client, "ride-evaluations", decisions_table="ride-decisions").sweep(now=later)
    assert len(first.evaluated) == 1 and second.evaluated == []
    assert store.count("ride-duration", "1", "production") == 1 and store.waiting() == 1
    late = store.sweep(now=NOW + 3 * 86400)  # w2's ride never got a decision within the window
    assert late.expired == 1 and store.waiting() == 0


def test_a_ride_waits_for_the_challengers_prediction_that_lags_production(store):
    """The shadow's consumer reads on its own and may be behind: a ride decided by production
    waits for its challenger's prediction (both compared on it), or for the wait to pass."""
    lagging = EvaluationStore(
        store.client,
        "ride-evaluations",
        decisions_table="ride-decisions",
        shadow_models=("ride-duration",),
        join_wait_seconds=600,
        sweep_interval_seconds=0,
    )
    decide(store, [prediction("s1", 10.0), prediction("s2", 10.0)])
    outcome = lagging.add("ride-completions#shard-0", [((1, 0), completion_from_json("s1", 12.0))], now=NOW)
    outcome2 = lagging.add("ride-completions#shard-0", [((2, 0), completion_from_json("s2", 12.0))], now=NOW)
    assert outcome.evaluated == outcome2.evaluated == [] and lagging.waiting() == 2
    decide(store, [prediction("s1", 13.0, version="2", role="shadow")])  # the challenger catches up on s1
    swept = lagging.sweep(now=NOW + 60)
    assert sorted((e.ride_id, e.role) for e in swept.evaluated) == [("s1", "production"), ("s1", "shadow")]
    challenger, incumbent = lagging.paired("ride-duration", "2", "1")
    assert (challenger.count, challenger.bias, incumbent.bias) == (1, 1.0, -2.0)
    # s2's challenger never predicts it: production's error is counted once the wait is over
    assert lagging.sweep(now=NOW + 300).evaluated == []
    assert [(e.ride_id, e.role) for e in lagging.sweep(now=NOW + 600).evaluated] == [("s2", "production")]
    assert lagging.waiting() == 0 and lagging.count("ride-duration", "1", "production") == 2


def test_a_ride_decided_by_the_timeout_waits_for_the_lagging_consumers_prediction(store):
    """The decision service decided without the fare (its consumer lagged past the timeout);
    the fare prediction is stored after. The outcome is compared with both."""
    waiting = EvaluationStore(
        store.client,
        "ride-evaluations",
        decisions_table="ride-decisions",
        evaluated_models=("ride-duration", "ride-fare"),
        join_wait_seconds=600,
        sweep_interval_seconds=0,
    )
    decide(store, [prediction("t1", 10.0)])  # decided: duration was all that was required
    late = completion_from(json.loads(completion("t1", 12.0, fare=20.0)))
    assert waiting.add("ride-completions#shard-0", [((1, 0), late)], now=NOW).evaluated == []
    decide(store, [prediction("t1", 18.0, model="ride-fare")])
    swept = waiting.sweep(now=NOW + 30)
    assert sorted((e.model, e.error) for e in swept.evaluated) == [("ride-duration", -2.0), ("ride-fare", -2.0)]
    assert waiting.count("ride-fare", "1", "production") == 1 and waiting.waiting() == 0


def completion_from_json(ride_id, minutes):
    return completion_from(json.loads(completion(ride_id, minutes)))


def real_completions(n, seed=3):
    """Completions as production sends them: UUID ride ids, durations from timestamps (seconds
    / 60: long decimals), fares and tips in cents."""
    import uuid

    rng, out = random.Random(seed), []
    for _ in range(n):
        ride_id = str(uuid.UUID(int=rng.getrandbits(128)))
        minutes = rng.randint(60, 3600) / 60
        out.append((ride_id, minutes, completion(ride_id, minutes, fare=rng.randint(300, 9000) / 100)))
    return out


def test_waiting_completions_are_packed_into_items_under_a_kilobyte(store):
    """A waiting item is written in a transaction (2 write units per KB) and deleted by the
    sweep the same way: as many real completions as fit in 1 KB go in one item."""
    from rides.local.meter import item_size

    rides = real_completions(100)
    feed(store, [payload for _, _, payload in rides], batch_size=100)
    items = store._query("waiting")
    assert store.waiting() == 100
    assert max(item_size(item) for item in items) <= 1024
    assert len(items) <= 10  # ~70 bytes a UUID ride's entry, not ~130
    # once their rides are decided, one sweep resolves every item in one transaction: the sums'
    # updates are paid once, not once per item
    decide(store, [prediction(ride_id, minutes + 1) for ride_id, minutes, _ in rides])
    real, calls = store.client.transact_write_items, []
    store.client.transact_write_items = lambda **kw: calls.append(len(kw["TransactItems"])) or real(**kw)
    swept = store.sweep(now=NOW + 30)
    assert swept.resolved == 100 and store.waiting() == 0
    assert calls == [1 + len(items)]  # the version's sums and the items' deletions
    assert sorted(e.actual for e in swept.evaluated) == sorted(minutes for _, minutes, _ in rides)


def test_a_waiting_item_is_rewritten_only_once_all_its_rides_are_ready_or_it_is_old(store):
    """Each rewrite of a waiting item costs its size again: while the item is young, the sweep
    waits for all its rides instead of rewriting it as each one is decided."""
    rides = real_completions(10)
    feed(store, [payload for _, _, payload in rides], batch_size=10)
    assert len(store._query("waiting")) == 1
    decide(store, [prediction(ride_id, minutes) for ride_id, minutes, _ in rides[:6]])
    writes = []
    real = store.client.transact_write_items
    store.client.transact_write_items = lambda **kw: writes.append(kw) or real(**kw)
    young = store.sweep(now=NOW + 15)
    assert (young.evaluated, young.waiting, writes) == ([], 10, [])
    old = store.sweep(now=NOW + RESOLVE_PARTIAL_AFTER_SECONDS)
    assert (len(old.evaluated), old.waiting, len(writes)) == (6, 4, 1)
    decide(store, [prediction(ride_id, minutes) for ride_id, minutes, _ in rides[6:]])
    last = store.sweep(now=NOW + RESOLVE_PARTIAL_AFTER_SECONDS + 15)
    assert (len(last.evaluated), last.waiting, store.waiting()) == (4, 0, 0)
    assert store.count("ride-duration", "1", "production") == 10


def test_waiting_items_written_before_the_packed_form_are_still_joined(store):
    """Items a previous version left (a list of [ride id, outcomes, since] per entry)."""
    store.client.put_item(
        TableName="ride-evaluations",
        Item={
            "pk": {"S": "waiting"},
            "sk": {"S": "ride-completions#shardId-000000000000#1/0"},
            "entries": {"S": json.dumps([["o1", {"ride_duration": 12.5}, NOW], ["o2", {"ride_duration": 8.0}, NOW]])},
            "version": {"N": "1"},
        },
    )
    assert store.waiting() == 2
    decide(store, [prediction("o1", 10.0), prediction("o2", 9.0)])
    swept = store.sweep(now=NOW + 30)
    assert sorted((e.ride_id, e.error) for e in swept.evaluated) == [("o1", -2.5), ("o2", 1.0)]
    assert store.waiting() == 0


def test_a_probe_ride_leaves_a_trace_of_its_join(store):
    decide(store, [prediction("smoke-1", 10.0), prediction("plain", 10.0)])
    feed(store, [completion("smoke-1", 12.0), completion("plain", 12.0)])
    [pair] = store.trace("smoke-1")
    assert (pair.model, pair.version, pair.role, pair.predicted, pair.actual) == (
        "ride-duration",
        "1",
        "production",
        10.0,
        12.0,
    )
    assert store.trace("plain") is None  # only probes: a trace per ride is what the sums save


def test_prediction_drift_counts_productions_predictions_only(store):
    """The reference is the production model's predictions on its training data: a
    challenger's predictions (here 100x larger) must not count in the hour's prediction drift."""
    decide(store, [prediction(f"d{i}", 10.0 + i) for i in range(5)])
    decide(store, [prediction(f"d{i}", 1000.0 + i, version="2", role="shadow") for i in range(5)])

    class Recording:
        def __init__(self):
            self.added = {}

        def add(self, hour, values, *, expires_at):
            self.added.update(values)
            return {}

    drift = Recording()
    records = [kinesis_record(completion(f"d{i}", 10.0), i + 1) for i in range(5)]
    process_records(
        records, CONFIG, store=store, drift=drift, dead_letters=DeadLetterSink(None, None), clock=lambda: NOW
    )
    assert sorted(drift.added["prediction"].tolist()) == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_drift_is_zero_on_the_reference_and_large_on_a_shifted_sample(aws):
    rng = np.random.default_rng(1)
    train = rng.gamma(2.0, 1.5, 20_000)
    ref = reference({"trip_distance": train}, train * 3)
    spec = ref["trip_distance"]
    same = counts(rng.gamma(2.0, 1.5, 5000), spec["edges"])
    shifted = counts(rng.gamma(2.0, 1.5, 5000) + 3, spec["edges"])
    assert psi(spec["expected"], same) < 0.02 and psi(spec["expected"], shifted) > 0.5
    assert math.isnan(psi(spec["expected"], [0] * len(spec["expected"])))
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**evaluations_table_spec("ride-evaluations"))
    counter = DriftCounter(dynamodb, "ride-evaluations", ref)
    half = rng.gamma(2.0, 1.5, 2000) + 3
    counter.add("2026-11-25T10", {"trip_distance": half[:1000]}, expires_at=0)
    scores = counter.add("2026-11-25T10", {"trip_distance": half[1000:]}, expires_at=0)
    # the hour accumulates: the index of both halves together
    assert scores["trip_distance"] == pytest.approx(psi(spec["expected"], counts(half, spec["edges"])))
    assert counter.hours(["2026-11-25T10"])["2026-11-25T10"]["trip_distance"][1] == 2000


def test_the_archive_has_the_terraform_layout_and_gives_the_live_figures(aws, store):
    """rides archive (what Firehose does on AWS) writes parquet by arrival hour with the Glue
    columns; the evaluation recomputed from it equals the live one."""
    from rides.local.archiver import archive_streams
    from rides.operate.archive import COLUMNS, evaluate_archive, read_archive, schema

    aws["s3"].create_bucket(Bucket="rides-models-stg")
    for stream in ("ride-predictions", "ride-decisions", "ride-completions"):
        aws["kinesis"].create_stream(StreamName=stream, ShardCount=1)
    rides = [(f"a{i}", 10.0 + i) for i in range(40)]
    payloads = [prediction(r, a + 1.5) for r, a in rides] + [
        prediction(r, a - 2, version="2", role="shadow") for r, a in rides
    ]
    for p in payloads + payloads[:5]:  # repeats, as at-least-once delivery makes them
        aws["kinesis"].put_record(StreamName="ride-predictions", PartitionKey="k", Data=json_of(p))
    for r, a in rides:
        aws["kinesis"].put_record(StreamName="ride-completions", PartitionKey="k", Data=completion(r, a))
    streams = {"ride-predictions": "predictions", "ride-decisions": "decisions", "ride-completions": "completions"}
    import tempfile
    from pathlib import Path

    state = Path(tempfile.mkdtemp())
    assert archive_streams(aws["kinesis"], aws["s3"], "rides-models-stg", streams, state) == {
        "ride-predictions": 85,
        "ride-decisions": 0,
        "ride-completions": 40,
    }
    # a second run archives only what came since
    assert archive_streams(aws["kinesis"], aws["s3"], "rides-models-stg", streams, state)["ride-predictions"] == 0
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket="rides-models-stg")["Contents"]]
    assert keys and all(
        re.match(r"archive/ride-(predictions|completions)/dt=\d{4}-\d\d-\d\d/hour=\d\d/.+\.parquet$", k) for k in keys
    )
    table = read_archive(aws["s3"], "rides-models-stg", "ride-predictions")
    assert table.schema == schema("predictions") and [n for n, _ in COLUMNS["predictions"]] == table.schema.names
    rows = evaluate_archive(aws["s3"], "rides-models-stg", "ride-predictions", "ride-completions")
    assert summarize(rows[("ride-duration", "1", "production")]).rmse == pytest.approx(1.5)
    assert summarize(rows[("ride-duration", "2", "shadow")]).bias == pytest.approx(-2.0)
    assert len(rows[("ride-duration", "1", "production")]) == 40  # repeats counted once


def json_of(payload):
    import orjson

    return payload if isinstance(payload, bytes) else orjson.dumps(payload)


def test_rides_evaluate_prints_the_table_and_writes_the_report(store, tmp_path):
    from click.testing import CliRunner

    from rides.cli import main

    rides = [(f"e{i}", 10.0 + i % 7) for i in range(60)]
    decide(
        store,
        [prediction(r, a + 1.0) for r, a in rides]
        + [prediction(r, a + 3.0, version="2", role="shadow") for r, a in rides],
    )
    feed(store, [completion(r, a, dropoff=datetime(2021, 2, 3, 8 + i % 3, 5)) for i, (r, a) in enumerate(rides)])
    report = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["evaluate", "--html", str(report), "--drift-reference", ""])
    assert result.exit_code == 0, result.output
    assert "ride-duration          1 production       60   1.000   1.000   1.000" in result.output
    assert "ride-duration          2 shadow           60   3.000   3.000   3.000" in result.output
    assert "shadow v2 vs production v1 of ride-duration, on the same 60 rides:" in result.output
    page = report.read_text()
    assert "<svg" in page and "polyline" in page and "ride-duration v2 shadow" in page


def test_a_waiting_ride_is_read_again_once_per_doubling_of_its_wait_not_at_every_sweep(store):
    """A consumer down for an hour leaves its rides undecided: with a sweep a minute, each
    waiting completion's ride was read 60 times. Read as its wait passes 1, 2, 4, 8… sweep
    intervals, it is read 6 times, and still joined at the first of those after its decision."""
    store = EvaluationStore(store.client, "ride-evaluations", decisions_table="ride-decisions")
    reads = []
    store.client.meta.events.register("before-call.dynamodb.BatchGetItem", lambda **_: reads.append(1))
    feed(store, [completion("late", 10.0)])
    reads.clear()
    minute = store.sweep_interval_seconds
    assert minute == 60.0  # the schedule's rate(1 minute) (infra/functions.tf SWEEP_INTERVAL_SECONDS)
    read_at = []
    for sweep_number in range(1, 61):  # an hour of sweeps, the ride undecided
        before = len(reads)
        outcome = store.sweep(now=NOW + sweep_number * minute)
        assert outcome.evaluated == [] and store.waiting() == 1
        if len(reads) > before:
            read_at.append(sweep_number)
    assert read_at == [1, 2, 4, 8, 16, 32]
    # decided at last: joined at the next doubling (64 minutes), not before
    decide(store, [prediction("late", 11.0)])
    assert store.sweep(now=NOW + 61 * minute).evaluated == []
    assert [e.ride_id for e in store.sweep(now=NOW + 64 * minute).evaluated] == ["late"]
    assert store.waiting() == 0


def test_a_probe_ride_and_a_ride_past_the_window_are_read_at_every_sweep(store):
    store = EvaluationStore(store.client, "ride-evaluations", decisions_table="ride-decisions")
    feed(store, [completion("smoke-1", 10.0), completion("old", 10.0)])
    assert store.sweep(now=NOW + 30).not_due == 0  # both in one item: the probe's; read
    decide(store, [prediction("smoke-1", 11.0)])
    assert [e.ride_id for e in store.sweep(now=NOW + 35).evaluated] == ["smoke-1"]
    # the item kept "old"; past the window it is read (and dropped) whatever its age's doubling
    past = store.sweep(now=NOW + store.window_seconds + 7)
    assert past.expired == 1 and store.waiting() == 0
