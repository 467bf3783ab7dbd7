"""Live evaluation: predictions joined with outcomes in any order, with duplicates and late,
give the same figures as an offline computation on the same rows; each pair counts once."""

from __future__ import annotations

import math
import random
import re
from datetime import datetime, timedelta

import boto3
import numpy as np
import pytest

from rides.local.stack import evaluations_table_spec
from rides.stream.deadletter import DeadLetterSink
from rides.stream.evaluation.drift import DriftCounter, counts, psi, reference
from rides.stream.evaluation.metrics import Summary, by_hour, paired, summarize
from rides.stream.evaluation.service import EvaluationConfig, process_records
from rides.stream.evaluation.store import EvaluationStore
from rides.stream.events import completion_json
from tests.helpers import kinesis_record

CONFIG = EvaluationConfig("ride-evaluations")
NOW = 1_764_000_000.0


@pytest.fixture
def store(aws):
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**evaluations_table_spec("ride-evaluations"))
    return EvaluationStore(dynamodb, "ride-evaluations")


def prediction(ride_id, value, version="1", role="production", model="ride-duration", field="ride_duration"):
    record = {"model": model, "version": version, "prediction": {"ride_id": ride_id, field: value}}
    if role != "production":
        record["role"] = role
    return record


def completion(ride_id, minutes, dropoff=datetime(2021, 2, 3, 8, 30), fare=None):
    return completion_json(ride_id, dropoff, duration_minutes=minutes, fare_amount=fare)


def feed(store, payloads, batch_size=37, now=NOW):
    """Through the consumer, as Lambda would deliver them, in batches."""
    evaluated = []
    for start in range(0, len(payloads), batch_size):
        chunk = payloads[start : start + batch_size]
        records = [kinesis_record(p, start + i + 1) for i, p in enumerate(chunk)]
        response, report = process_records(
            records, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(None, None), clock=lambda: now
        )
        assert response == {"batchItemFailures": []}
        evaluated += report.evaluated
    return evaluated


def test_any_order_duplicates_and_late_outcomes_give_the_offline_figures(store):
    rng = random.Random(7)
    rides = [(f"r{i}", rng.uniform(3, 50)) for i in range(300)]
    v1 = {ride: actual + rng.gauss(0, 4) for ride, actual in rides}
    v2 = {ride: actual + rng.gauss(1, 6) for ride, actual in rides}
    payloads = (
        [prediction(r, v1[r]) for r, _ in rides]
        + [prediction(r, v2[r], version="2", role="shadow") for r, _ in rides]
        + [completion(r, a, dropoff=datetime(2021, 2, 3, 8) + timedelta(minutes=i)) for i, (r, a) in enumerate(rides)]
    )
    payloads += rng.sample(payloads, 150)  # at-least-once delivery: repeats
    rng.shuffle(payloads)
    late = [p for p in payloads if isinstance(p, bytes)][:40]  # some outcomes arrive much later
    on_time = [p for p in payloads if not (isinstance(p, bytes) and p in late)]
    live = feed(store, on_time) + feed(store, late, now=NOW + 3600 * 20)

    actual = dict(rides)
    for version, predicted, role in (("1", v1, "production"), ("2", v2, "shadow")):
        mine = [e for e in live if e.version == version]
        assert len(mine) == len({e.ride_id for e in mine}) == 300  # each pair exactly once
        assert {e.role for e in mine} == {role}
        offline = Summary.of(predicted[r] - actual[r] for r, _ in rides)
        online = summarize(store.evaluated("ride-duration", version, role))
        assert online.count == offline.count == store.count("ride-duration", version, role) == 300
        for name in ("rmse", "mae", "bias"):
            assert getattr(online, name) == pytest.approx(getattr(offline, name), rel=1e-12)
        assert summarize(mine).rmse == pytest.approx(offline.rmse, rel=1e-12)  # the metrics emitted
    # per hour, by drop-off hour
    hours = by_hour(store.evaluated("ride-duration", "1", "production"))
    assert sum(s.count for s in hours.values()) == 300 and len(hours) == 5
    # the same rides compared, and the catalog of what predicted
    challenger, incumbent = paired(
        store.evaluated("ride-duration", "2", "shadow"), store.evaluated("ride-duration", "1", "production")
    )
    assert challenger.count == incumbent.count == 300
    assert sorted(store.versions()) == [("ride-duration", "1", "production"), ("ride-duration", "2", "shadow")]


def test_each_field_pairs_with_its_own_outcome_and_repeats_add_nothing(store):
    feed(store, [prediction("a", 10.0), prediction("a", 12.0, model="ride-fare", field="fare_amount")])
    evaluated = feed(store, [completion("a", 11.0, fare=15.0)])
    assert sorted((e.model, e.error) for e in evaluated) == [("ride-duration", -1.0), ("ride-fare", -3.0)]
    assert feed(store, [completion("a", 11.0, fare=15.0), prediction("a", 10.0)]) == []  # repeats: nothing new
    assert feed(store, [prediction("b", 5.0)], batch_size=5) == []
    assert feed(store, [completion("b", 5.0, fare=None)], batch_size=5)[0].error == 0.0


def test_bad_records_are_dead_letters_and_a_missing_table_reports_the_records(aws):
    dlq = aws["sqs"].create_queue(QueueName="dlq")["QueueUrl"]
    store = EvaluationStore(boto3.client("dynamodb"), "no-such-table")
    records = [
        kinesis_record(b"{not json", 1),
        kinesis_record({"type": "ride-completed", "ride_id": "x"}, 2),
        kinesis_record(prediction("r1", 3.0), 3),
        kinesis_record({"something": "else"}, 4),
    ]
    response, report = process_records(
        records, CONFIG, store=store, drift=None, dead_letters=DeadLetterSink(aws["sqs"], dlq)
    )
    # the prediction is retried (the table is missing); the three unreadable ones are letters
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{3:056d}"}]}
    assert report.dead_lettered == 3


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
    from rides.archive import COLUMNS, evaluate_archive, read_archive, schema
    from rides.local.archiver import archive_streams

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
    feed(
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


def test_unprocessed_rows_are_sent_again_and_reported_when_they_never_go(store):
    """BatchWriteItem may leave items unprocessed (throttling): they go again, and rides whose
    rows never go are returned for their records to be retried."""
    from rides.stream.evaluation.store import Evaluated

    rows = [
        Evaluated(f"u{i}", "ride-duration", "1", "production", "ride_duration", 10.0, 9.0, "2021-02-03T08")
        for i in range(30)
    ]
    real = store.client

    class Flaky:  # the first call leaves its last 5 items unprocessed
        calls = 0

        def batch_write_item(self, RequestItems):
            Flaky.calls += 1
            [(table, requests)] = RequestItems.items()
            if Flaky.calls == 1:
                real.batch_write_item(RequestItems={table: requests[:-5]})
                return {"UnprocessedItems": {table: requests[-5:]}}
            return real.batch_write_item(RequestItems=RequestItems)

    class Never:
        def batch_write_item(self, RequestItems):
            return {"UnprocessedItems": RequestItems}

    class TwoTries:
        def __init__(self, time_left=None):
            self.tries = 0

        def wait(self):
            self.tries += 1
            return self.tries < 2

    store.client, store.backoff = Flaky(), TwoTries
    assert store._write_rows(rows, NOW, None) == {}
    assert Flaky.calls == 3  # 25 + 5 items, then the 5 left over
    store.client = real
    assert store.count("ride-duration", "1", "production") == 30
    store.client = Never()
    failed = store._write_rows(rows[:3], NOW, None)
    assert failed == {"u0": "RetriesExhausted", "u1": "RetriesExhausted", "u2": "RetriesExhausted"}
