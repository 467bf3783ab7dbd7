"""Live evaluation: outcomes joined with the predictions the decision service stored, in any
order, delivered again, before their ride's decision or across many hours, give the same
figures as an offline computation on the same rides; each ride counts once."""

from __future__ import annotations

import json
import logging
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
from rides.stream.evaluation.sums import Evaluated
from rides.stream.evaluation.waiting import (
    WAITING_ITEM_BYTES,
    WAITING_ITEM_OVERHEAD,
    Packing,
    Waiting,
    pack,
    packed,
    unpack,
)
from rides.stream.events import completion_from, completion_json, prediction_from
from rides.stream.failures import Failure
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


def transaction_sizes(store) -> list[int]:
    """The number of actions in each TransactWriteItems the store sends from now on."""
    sizes, real = [], store.client.transact_write_items
    store.client.transact_write_items = lambda **kw: sizes.append(len(kw["TransactItems"])) or real(**kw)
    return sizes


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
    calls = transaction_sizes(store)
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


# -- configuration, reports and the sweep's bookkeeping -------------------------------------------


def test_the_evaluation_config_reads_each_variable_and_has_the_documented_defaults(aws):
    assert EvaluationConfig.from_env({}) == EvaluationConfig(
        "ride-evaluations",
        decisions_table="ride-decisions",
        dead_letter_queue_url=None,
        window_seconds=48 * 3600.0,
        drift_reference_uri=None,
        drift_model="ride-duration",
        evaluated_models=(),
        shadow_models=(),
        join_wait_seconds=900.0,
        sweep_interval_seconds=60.0,
    )
    env = {
        "EVALUATIONS_TABLE": "ride-evaluations-stg",
        "DECISIONS_TABLE": "ride-decisions-stg",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/dlq",
        "EVALUATION_WINDOW_HOURS": "6",
        "DRIFT_REFERENCE_URI": "models:/ride-duration@production",
        "DRIFT_MODEL": "ride-fare",
        "EVALUATED_MODELS": "ride-duration, ride-fare",
        "SHADOW_MODELS": "ride-duration,",
        "JOIN_WAIT_SECONDS": "30",
        "SWEEP_INTERVAL_SECONDS": "5",
    }
    assert set(env) == set(EvaluationConfig.ENV_VARS)
    config = EvaluationConfig.from_env(env)
    assert config == EvaluationConfig(
        "ride-evaluations-stg",
        decisions_table="ride-decisions-stg",
        dead_letter_queue_url="https://sqs.us-east-1.amazonaws.com/1/dlq",
        window_seconds=6 * 3600.0,
        drift_reference_uri="models:/ride-duration@production",
        drift_model="ride-fare",
        evaluated_models=("ride-duration", "ride-fare"),
        shadow_models=("ride-duration",),
        join_wait_seconds=30.0,
        sweep_interval_seconds=5.0,
    )
    store = config.store(boto3.client("dynamodb"))
    assert (store.table_name, store.decisions.table_name, store.evaluated_models, store.shadow_models) == (
        "ride-evaluations-stg",
        "ride-decisions-stg",
        ("ride-duration", "ride-fare"),
        ("ride-duration",),
    )
    assert (store.window_seconds, store.join_wait_seconds, store.sweep_interval_seconds) == (21600.0, 30.0, 5.0)


def test_a_reports_summaries_are_the_figures_of_its_pairs_per_model_version_and_role(store):
    decide(store, [prediction("m1", 10.0), prediction("m2", 20.0)])
    decide(
        store, [prediction("m1", 13.0, version="2", role="shadow"), prediction("m2", 21.0, version="2", role="shadow")]
    )
    _, report = deliver(store, [completion("m1", 12.0), completion("m2", 18.0)])
    assert report.summaries() == {
        ("ride-duration", "1", "production"): Summary.of([-2.0, 2.0]),
        ("ride-duration", "2", "shadow"): Summary.of([1.0, 3.0]),
    }


def test_a_probe_rides_trace_is_read_consistently_and_names_each_pair_whole(store):
    """The smoke test reads the trace right after its completion is joined: a strongly
    consistent read, or it may not see the join yet."""
    decide(store, [prediction("smoke-2", 10.0)])
    feed(store, [completion("smoke-2", 12.0)])
    asked = []
    store.client.meta.events.register(
        "provide-client-params.dynamodb.GetItem", lambda params, **_: asked.append(params)
    )
    assert store.trace("smoke-2") == [
        Evaluated("smoke-2", "ride-duration", "1", "production", "ride_duration", 10.0, 12.0, "")
    ]
    assert [params["ConsistentRead"] for params in asked] == [True]


def test_the_sweep_keeps_to_its_time_reports_what_still_waits_and_says_what_it_dropped(store, caplog, monkeypatch):
    from rides.stream.evaluation import store as evaluation_store

    monkeypatch.setattr(evaluation_store, "SWEEP_READ_ITEMS", 1)  # each waiting item a page of its own
    config = EvaluationConfig(
        "ride-evaluations", decisions_table="ride-decisions", window_seconds=5400, sweep_interval_seconds=0
    )
    swept = config.store(store.client)
    feed(swept, [completion("x1", 10.0), completion("x2", 10.0)])
    feed(swept, [completion("x3", 10.0)], now=NOW + 3600, start=10)
    decide(store, [prediction("x3", 11.0)])
    later = NOW + 5401  # x1 and x2 are past the 1.5 h window; x3 can be joined
    with caplog.at_level(logging.WARNING):
        stopped = sweep(config, store=swept, time_left=lambda: 0, clock=lambda: later)
        assert (stopped.evaluated, stopped.waiting, swept.waiting(), caplog.records) == ([], 3, 3, [])
        report = sweep(config, store=swept, clock=lambda: later)
    assert ([e.ride_id for e in report.evaluated], report.waiting, swept.waiting()) == (["x3"], 0, 0)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("rides.stream.evaluation", "2 completions dropped: their ride had no decision within 1.5 h")
    ]


def test_a_sweeps_counts_are_what_the_table_holds(store):
    """Items not due, due but young, partly joined and past the window in one sweep: what it
    says still waits is what the table holds after it."""
    timed = EvaluationStore(store.client, "ride-evaluations", decisions_table="ride-decisions")  # a sweep a minute
    at = NOW + 3 * 86400
    old = at - timed.window_seconds - 10
    # the sweep reads due items in key order ("1/0" < "10/0" < "3/0"): e, f, c, d
    feed(timed, [completion("e1", 10.0), completion("e2", 10.0)], now=old)  # past the window
    feed(timed, [completion("f1", 10.0)], now=at - 64, start=3)  # due, its ride undecided
    feed(timed, [completion("c1", 10.0), completion("c2", 10.0)], now=at - 64, start=4)  # due, young: kept whole
    feed(timed, [completion("d1", 10.0), completion("d2", 10.0)], now=at - 240, start=6)  # due, old: partly joined
    feed(timed, [completion("a1", 10.0), completion("a2", 10.0)], now=at - 30, start=8)  # not due
    feed(timed, [completion("b1", 10.0)], now=at - 30, start=10)  # not due
    decide(store, [prediction("d1", 11.0), prediction("c1", 11.0)])
    outcome = timed.sweep(now=at)
    assert [e.ride_id for e in outcome.evaluated] == ["d1"]
    assert (outcome.resolved, outcome.expired, outcome.not_due, outcome.conflicts) == (1, 2, 2, 0)
    assert outcome.waiting == timed.waiting() == 7
    # the partly joined item was written again, one version on
    [rewritten] = [item for item in timed._query("waiting") if "d2" in item["rows"]["S"]]
    assert rewritten["version"]["N"] == "2"


def test_each_transaction_a_racing_sweep_resolved_first_is_a_conflict(store, monkeypatch):
    from rides.stream.evaluation import store as evaluation_store
    from rides.stream.evaluation.sums import Sums

    feed(store, [completion("r1", 10.0)])
    feed(store, [completion("r2", 10.0)], start=10)
    decide(store, [prediction("r1", 11.0), prediction("r2", 11.0)])
    one = Evaluated("r1", "ride-duration", "1", "production", "ride_duration", 11.0, 10.0, "2025-11-24T16")
    # room for one item's sums and rewrite per transaction: the two items go in two
    monkeypatch.setattr(evaluation_store, "MAX_ACTIONS", Sums().keys_after([one]) + 1)
    real = store._query
    # the items as a sweep read them before another one resolved them (an older version)
    monkeypatch.setattr(
        store,
        "_query",
        lambda pk: [{**item, "version": {"N": "0"}} for item in real(pk)] if pk == "waiting" else real(pk),
    )
    outcome = store.sweep(now=NOW + 30)
    assert (outcome.evaluated, outcome.resolved, outcome.conflicts, outcome.waiting) == ([], 0, 2, 2)


def test_a_waiting_item_is_due_once_per_doubling_of_its_age_and_always_at_the_window():
    waiting = EvaluationStore(None, "ride-evaluations", sweep_interval_seconds=1, window_seconds=100)
    entries = [Waiting("r1", {"ride_duration": 10.0}, 0.0)]
    assert [now for now in range(20) if waiting.due(entries, float(now))] == [1, 2, 4, 8, 16]
    assert waiting.due(entries, 100.0) and not waiting.due(entries, 99.0)  # read at the window, to expire it
    assert not EvaluationStore(None, "t", sweep_interval_seconds=60).due(entries, 30.0)  # read when it came


def test_a_waiting_item_is_keyed_by_its_first_completions_position(store):
    store.add(
        "ride-completions#shard-0",
        [((7, 2), completion_from_json("k1", 10.0)), ((8, 0), completion_from_json("k2", 10.0))],
        now=NOW,
    )
    store.add("ride-completions#shard-1", [(None, completion_from_json("k3", 10.0))], now=NOW)  # no position
    keys = sorted(item["sk"]["S"] for item in store._query("waiting"))
    assert keys[0] == "ride-completions#shard-0#7/2"
    assert re.fullmatch(r"ride-completions#shard-1#\d{19}", keys[1])  # the time it came, in nanoseconds


def test_waiting_items_are_filled_to_the_byte_and_never_past_it():
    """A waiting item's rows are `[row,row,...]`; the rows that fill an item's room exactly go
    in one item, and a byte more starts the next one."""
    from rides.local.meter import item_size

    shard = "ride-completions#shardId-000000000000"
    room = WAITING_ITEM_BYTES - WAITING_ITEM_OVERHEAD - len(shard.encode())
    row = len(Waiting("", {"ride_duration": 12.5}, NOW).row())
    per_item = 8
    width = (room - 1) // per_item - 1 - row  # ride id length: eight rows and their commas fill the room
    extra = (room - 1) - per_item * (width + row + 1)

    def entries(tag, last_extra):
        ids = [f"{tag}{i}".ljust(width, "x") for i in range(per_item - 1)] + [f"{tag}7".ljust(width + last_extra, "x")]
        return [Waiting(ride_id, {"ride_duration": 12.5}, NOW) for ride_id in ids]

    exact = entries("a", extra) + entries("b", extra)
    groups = packed(shard, exact)
    assert [len(g) for g in groups] == [8, 8]
    assert [len(pack(g)["rows"]["S"]) for g in groups] == [room, room]
    assert [len(g) for g in packed(shard, entries("c", extra + 1))] == [7, 1]
    # what a store writes with the longest Kinesis position is still under 1 KB
    put = EvaluationStore(None, "ride-evaluations")._waiting_put(shard, (10**56 - 1, 0), groups[0])
    assert item_size(put["Put"]["Item"]) <= WAITING_ITEM_BYTES
    # the packing tells how many items one more completion would take, without packing again
    packing = Packing(shard)
    for i, entry in enumerate(exact + entries("c", extra + 1)):
        assert packing.items_with(entry) == len(packed(shard, [*(exact + entries("c", extra + 1))[:i], entry]))
        packing.add(entry)


def test_a_waiting_row_is_compact_and_must_match_its_items_fields():
    assert Waiting("r1", {"ride_duration": 12.5, "tip_amount": 2.0}, NOW).row() == '["r1",12.5,null,2.0]'
    item = {"fields": {"S": '["ride_duration"]'}, "since": {"N": "1"}, "rows": {"S": '[["r1",12.5,3.0]]'}}
    with pytest.raises(ValueError):  # not a completion with its outcomes shifted
        unpack(item)


# -- drift: what the evaluation consumer counts, in which hour ------------------------------------


@pytest.fixture
def new_york_time(monkeypatch):
    """A machine whose local time is not UTC: the drift hour must still be UTC's."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def drift_counter(store, table="ride-evaluations"):
    from rides.stream.events import validate_event
    from rides.stream.features import features_from_events
    from tests.helpers import ride

    training = features_from_events([validate_event(ride(f"t{i}", distance=0.5 + i)) for i in range(50)])
    return DriftCounter(store.client, table, reference(training.columns, np.linspace(5.0, 30.0, 50)))


NOW_HOUR = "2025-11-24T16"  # NOW in UTC (11:00 in New York)


def test_the_consumer_counts_the_hours_rides_and_production_predictions_for_drift(store, new_york_time):
    from tests.helpers import ride

    drift = drift_counter(store)
    decide(store, [prediction("p1", 10.0), prediction("p2", 20.0)])
    payloads = [ride(f"r{i}", distance=1.0 + i) for i in range(3)] + [completion("p1", 12.0), completion("p2", 18.0)]
    response, report = process_records(
        [kinesis_record(p, i + 1) for i, p in enumerate(payloads)],
        CONFIG,
        store=store,
        drift=drift,
        dead_letters=DeadLetterSink(None, None),
        clock=lambda: NOW,
    )
    assert response == {"batchItemFailures": []}
    counted = drift.hours([NOW_HOUR])[NOW_HOUR]
    features = set(drift.reference) - {"prediction"}
    assert {name: n for name, (_, n) in counted.items()} == {**dict.fromkeys(features, 3), "prediction": 2}
    assert report.drift == pytest.approx({name: score for name, (score, _) in counted.items()})
    items = store._query(f"drift#{NOW_HOUR}")
    assert {item["expires_at"]["N"] for item in items} == {str(int(NOW) + 30 * 86400)}  # kept 30 days


def test_drift_counts_that_cannot_be_stored_cost_a_log_line_not_the_records(store, caplog):
    from tests.helpers import ride

    broken = drift_counter(store, table="no-such-table")
    with caplog.at_level(logging.WARNING):
        response, report = process_records(
            [kinesis_record(ride("r1"), 1)],
            CONFIG,
            store=store,
            drift=broken,
            dead_letters=DeadLetterSink(None, None),
            clock=lambda: NOW,
        )
    assert response == {"batchItemFailures": []} and report.drift == {}
    [message] = [r.getMessage() for r in caplog.records if r.name == "rides.stream.evaluation"]
    assert message.startswith("drift counts not stored: ResourceNotFoundException: An error occurred")


def test_the_sweep_counts_the_predictions_it_joins_for_drift_through_the_callers_logger(store, caplog):
    drift = drift_counter(store)
    feed(store, [completion("w1", 12.0)])  # before its ride's decision: it waits
    decide(store, [prediction("w1", 10.0)])
    report = sweep(CONFIG, store=store, drift=drift, clock=lambda: NOW + 30)
    assert [e.ride_id for e in report.evaluated] == ["w1"]
    assert {name: n for name, (_, n) in drift.hours([NOW_HOUR])[NOW_HOUR].items()} == {"prediction": 1}
    assert list(report.drift) == ["prediction"]
    mine = logging.getLogger("tests.evaluation.sweep")
    for ride_id, counter, logger in [("w2", drift_counter(store, table="no-such-table"), mine), ("w3", None, None)]:
        feed(store, [completion(ride_id, 12.0)], start=10 + int(ride_id[1]))
        decide(store, [prediction(ride_id, 10.0)])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            joined = sweep(CONFIG, store=store, drift=counter, clock=lambda: NOW + 30, logger=logger)
        assert [e.ride_id for e in joined.evaluated] == [ride_id] and joined.drift == {}
        # the broken counter's warning on the caller's logger; no counter, no warning
        assert [r.name for r in caplog.records] == (["tests.evaluation.sweep"] if counter else [])


def test_a_sweep_whose_time_runs_out_before_it_reads_reads_nothing_and_changes_nothing(store):
    feed(store, [completion("z1", 12.0)])
    decide(store, [prediction("z1", 10.0)])
    left = iter([1.0])  # time for the check before the page, none after it
    reads = []
    store.client.meta.events.register("before-call.dynamodb.BatchGetItem", lambda **_: reads.append(1))
    outcome = store.sweep(now=NOW + 30, time_left=lambda: next(left, 0.0))
    assert (outcome.evaluated, outcome.waiting, reads) == ([], 1, [])
    assert [e.ride_id for e in store.sweep(now=NOW + 31).evaluated] == ["z1"]


def test_a_completion_is_dropped_once_it_is_older_than_the_window_not_at_its_age(store):
    feed(store, [completion("o1", 10.0)])
    assert store.sweep(now=NOW + store.window_seconds).expired == 0 and store.waiting() == 1
    assert store.sweep(now=NOW + store.window_seconds + 1).expired == 1 and store.waiting() == 0


def test_an_items_rides_join_while_their_sums_fit_one_transaction(store, monkeypatch):
    """MAX_ACTIONS (TransactWriteItems' 100) bounds each item's pairs and each group of items:
    here made small enough to reach both edges."""
    from rides.stream.evaluation import store as evaluation_store
    from rides.stream.evaluation.sums import Sums

    one = Evaluated("r", "ride-duration", "1", "production", "ride_duration", 11.0, 10.0, "2021-02-03T08")
    keys = Sums().keys_after([one])  # the sums items one production pair updates
    feed(store, [completion("g1", 10.0), completion("g2", 10.0)])
    feed(store, [completion("h1", 10.0)], start=10)
    decide(store, [prediction(r, 11.0) for r in ("g1", "g2", "h1")])
    calls = transaction_sizes(store)
    monkeypatch.setattr(evaluation_store, "MAX_ACTIONS", keys)  # no room for an item's rewrite
    assert store.sweep(now=NOW + 300).evaluated == [] and calls == []
    monkeypatch.setattr(evaluation_store, "MAX_ACTIONS", keys + 1)  # an item at a time
    assert len(store.sweep(now=NOW + 300).evaluated) == 3 and calls == [keys + 1, keys + 1]


def test_two_items_that_fit_one_transaction_are_resolved_in_one(store, monkeypatch):
    from rides.stream.evaluation import store as evaluation_store
    from rides.stream.evaluation.sums import Sums

    one = Evaluated("r", "ride-duration", "1", "production", "ride_duration", 11.0, 10.0, "2021-02-03T08")
    monkeypatch.setattr(evaluation_store, "MAX_ACTIONS", Sums().keys_after([one]) + 2)  # the sums, two items
    feed(store, [completion("g1", 10.0)])
    feed(store, [completion("h1", 10.0)], start=10)
    decide(store, [prediction(r, 11.0) for r in ("g1", "h1")])
    calls = transaction_sizes(store)
    assert len(store.sweep(now=NOW + 300).evaluated) == 2 and len(calls) == 1


def test_the_tables_reads_follow_every_page(store):
    """DynamoDB answers a query 1 MB at a time: here two items a page."""
    real = store.client.query
    store.client.query = lambda **kw: real(**kw, Limit=2)
    feed(store, [completion(f"q{i}", 10.0) for i in range(5)], batch_size=1)
    assert store.waiting() == 5


def test_the_figures_per_hour_and_of_a_challenger_against_its_incumbent(store):
    decide(store, [prediction("s1", 10.0), prediction("s2", 20.0)])
    decide(
        store, [prediction("s1", 13.0, version="2", role="shadow"), prediction("s2", 21.0, version="2", role="shadow")]
    )
    # another challenger, on another ride (a ride has one challenger a model)
    decide(store, [prediction("s3", 10.0), prediction("s3", 9.0, version="3", role="shadow")])
    feed(store, [completion("s1", 12.0), completion("s2", 18.0), completion("s3", 12.0)])
    # counted in the hour they were joined (NOW's)
    assert store.hours("ride-duration", "1", "production") == {"2025-11-24T16": Summary.of([-2.0, 2.0, -2.0])}
    challenger, incumbent = store.paired("ride-duration", "2", "1")
    assert (challenger, incumbent) == (Summary.of([1.0, 3.0]), Summary.of([-2.0, 2.0]))
    assert store.paired("ride-duration", "3", "1") == (Summary.of([-3.0]), Summary.of([-2.0]))


def test_a_figure_an_item_does_not_have_yet_reads_as_zero(store):
    store.client.put_item(
        TableName="ride-evaluations",
        Item={"pk": {"S": "paired"}, "sk": {"S": "ride-duration#2#1#2021-02-03T08"}, "n": {"N": "2"}},
    )
    assert store.paired("ride-duration", "2", "1") == (Summary(2, 0.0, 0.0, 0.0), Summary(2, 0.0, 0.0, 0.0))


# -- the consumer's batch: its report, its deadline, a bug while counting ----------------------------


def two_shards(payloads_a, payloads_b, start=1, start_b=None):
    start_b = start if start_b is None else start_b
    return [kinesis_record(p, start + i, shard="shardId-000000000000") for i, p in enumerate(payloads_a)] + [
        kinesis_record(p, start_b + i, shard="shardId-000000000001") for i, p in enumerate(payloads_b)
    ]


def test_a_batch_over_two_shards_reports_every_kind_of_record(store):
    from tests.helpers import ride

    decide(store, [prediction(r, 10.0) for r in ("a1", "a2", "b1")])
    batch = two_shards(
        [completion("a1", 12.0), completion("a2", 12.0), prediction("a9", 10.0), completion("a3", 12.0)],
        [completion("b1", 12.0), completion("b2", 12.0), ride("b3"), b'{"neither": 1}'],
    )
    response, report = process_records(
        batch, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(None, None), clock=lambda: NOW
    )
    assert response == {"batchItemFailures": []}
    counts = (report.records, report.completions, report.predictions, report.ride_events, report.waiting)
    assert counts == (8, 5, 1, 1, 2)  # a3 and b2 wait for their ride's decision
    assert (sorted(e.ride_id for e in report.evaluated), report.repeated) == (["a1", "a2", "b1"], 0)
    _, again = process_records(  # delivered again: each shard's completions are repeats
        batch, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(None, None), clock=lambda: NOW
    )
    assert (again.evaluated, again.waiting, again.repeated) == ([], 0, 5)


def test_records_of_unknown_shape_are_dead_letters_with_their_reason():
    from rides.stream.evaluation.service import parse_any
    from rides.stream.events import InvalidEvent, RideEvent
    from tests.helpers import ride

    assert isinstance(parse_any(json.dumps(ride("r1")).encode()), RideEvent)
    with pytest.raises(InvalidEvent, match=r"^neither a prediction, a ride-completed event nor a ride event$"):
        parse_any(b'{"neither": 1}')


def test_a_batch_with_no_time_left_counts_nothing_and_hands_every_record_back(store, aws):
    decide(store, [prediction("n1", 10.0)])
    batch = two_shards([completion("n1", 12.0)], [b"not json"], start_b=2)
    response, report = process_records(
        batch,
        CONFIG,
        store=store,
        drift=None,
        dead_letters=DeadLetterSink(aws["sqs"], aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]),
        time_left=lambda: 0.0,
        clock=lambda: NOW,
    )
    assert report.evaluated == [] and store.count("ride-duration", "1", "production") == 0
    assert report.errors[Failure.DEADLINE_PASSED] == 1  # the completion, under why it was not counted
    # the poison record too: its dead letter cannot be sent in time, so Lambda gets it back
    assert len(response["batchItemFailures"]) == 2


def test_a_bug_while_counting_one_shard_reports_its_records_and_not_the_other_shards(store, caplog, monkeypatch):
    decide(store, [prediction(r, 10.0) for r in ("g1", "h1")])
    real = store.add

    def add(shard, completions, **kwargs):
        if shard.endswith("shardId-000000000000"):
            raise ZeroDivisionError("a bug")
        return real(shard, completions, **kwargs)

    monkeypatch.setattr(store, "add", add)
    mine = logging.getLogger("tests.evaluation.batch")
    batch = two_shards([completion("g1", 12.0), completion("g2", 12.0)], [completion("h1", 12.0)])
    with caplog.at_level(logging.ERROR):
        response, report = process_records(
            batch,
            CONFIG,
            store=store,
            drift=None,
            dead_letters=DeadLetterSink(None, None),
            clock=lambda: NOW,
            logger=mine,
        )
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{seq:056d}"} for seq in (1, 2)]}
    assert [e.ride_id for e in report.evaluated] == ["h1"] and report.errors == {"ZeroDivisionError": 2}
    [logged] = caplog.records
    assert (logged.name, logged.getMessage(), logged.records) == (
        "tests.evaluation.batch",
        "unexpected error while counting completions",
        2,
    )
    assert logged.exc_info[1].args == ("a bug",)


def test_a_completion_sent_twice_in_a_batch_counts_once_and_the_next_ones_still_count(store):
    decide(store, [prediction(r, 10.0) for r in ("u1", "u2")])
    response, report = deliver(store, [completion("u1", 12.0), completion("u1", 12.0), completion("u2", 12.0)])
    assert response == {"batchItemFailures": []}
    assert sorted(e.ride_id for e in report.evaluated) == ["u1", "u2"]
    assert store.count("ride-duration", "1", "production") == 2


def test_each_transaction_of_a_batch_stays_within_its_room(store, monkeypatch):
    """The chunks are cut before a transaction would pass MAX_ACTIONS, counting the waiting
    items a completion would start (made small here to reach the edge often)."""
    from rides.stream.evaluation import store as evaluation_store

    monkeypatch.setattr(evaluation_store, "MAX_ACTIONS", 3)
    rides = real_completions(30)
    decide(store, [prediction(ride_id, minutes) for ride_id, minutes, _ in rides[::3]])
    calls = transaction_sizes(store)
    response, report = deliver(store, [payload for _, _, payload in rides])
    assert response == {"batchItemFailures": []}
    assert len(report.evaluated) == 10 and store.waiting() == 20
    assert calls == [3, 3]  # the sums, the mark and a waiting item each


def test_a_mark_moved_by_another_invocation_is_read_again_three_times_at_most(store):
    """Two invocations on one shard (a redrive beside the live function): the one whose mark
    condition fails reads the mark again and counts only what the other did not."""
    decide(store, [prediction(r, 10.0) for r in ("v1", "v2", "v3")])
    shard = "ride-completions#shard-0"
    done = [((i, 0), completion_from_json(f"v{i}", 12.0)) for i in (1, 2, 3)]
    store.add(shard, done[:1], now=NOW)  # v1 counted before
    other = EvaluationStore(store.client, "ride-evaluations", decisions_table="ride-decisions")
    real, calls = store.client.transact_write_items, []

    def racing(**kw):
        calls.append(1)
        if len(calls) == 1:  # the other invocation counts v2 first
            store.client.transact_write_items = real
            assert not other.add(shard, done[1:2], now=NOW).failed
            store.client.transact_write_items = racing
        return real(**kw)

    store.client.transact_write_items = racing
    outcome = store.add(shard, done, now=NOW)
    assert ([e.ride_id for e in outcome.evaluated], outcome.repeated, outcome.failed) == (["v3"], 2, {})
    assert store.count("ride-duration", "1", "production") == 3

    # a mark that moves at every read: three reads, then the records go back for a retry
    from botocore.exceptions import ClientError

    def always_moved(**kw):
        calls.append(1)
        reasons = [{"Code": "ConditionalCheckFailed"}]
        raise ClientError(
            {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}, "TransactWriteItems"
        )

    calls.clear()
    store.client.transact_write_items = always_moved
    moved = store.add("ride-completions#shard-1", [((1, 0), completion_from_json("v9", 12.0))], now=NOW)
    assert (moved.failed, len(calls)) == ({0: "MarkMoved"}, 3)


def test_a_sweep_that_cannot_read_the_rides_keeps_every_page_waiting(store, monkeypatch):
    from rides.stream.evaluation import store as evaluation_store
    from tests.helpers import Failing

    monkeypatch.setattr(evaluation_store, "SWEEP_READ_ITEMS", 1)  # each waiting item a page of its own
    feed(store, [completion("y1", 10.0), completion("y2", 10.0)])
    feed(store, [completion("y3", 10.0)], start=10)
    decide(store, [prediction(r, 10.0) for r in ("y1", "y2", "y3")])
    store.decisions.client = Failing(store.client, "batch_get_item", "AccessDeniedException", failures=10)
    outcome = store.sweep(now=NOW + 30)
    assert (outcome.evaluated, outcome.waiting, store.waiting()) == ([], 3, 3)
    assert len(store.decisions.client.calls) == 2  # each page tried
