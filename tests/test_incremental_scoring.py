"""`rides score --from-db`: new rides from the rides table, exactly once, on SQLite and PostgreSQL.

Every test counts every ride afterwards: each ride id of the rides table is in the predictions
or in the skipped table, once, and the runs' own counts add up to the table (so no ride was
scored twice, which the upsert alone would hide)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from rides.batch.database import create_engine
from rides.batch.incremental import Watermarks, parse_period, run_every, score_new_rides
from rides.batch.ride_source import RidesTable, load_rides
from rides.batch.scoring import PredictionTable
from rides.stream.model import load_model

MONTH = "2021-02"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rides.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def model(onnx_model_dir):
    return load_model(str(onnx_model_dir), version="3")


def account(url: str, version: str = "3") -> tuple[int, int, int]:
    """(rides, predictions + skipped, rides in neither or in both)."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rides = {r for (r,) in connection.exec_driver_sql("SELECT ride_id FROM rides")}
        scored = [
            r
            for (r,) in connection.exec_driver_sql(
                f"SELECT ride_id FROM ride_predictions WHERE model_version = '{version}'"
            )
        ]
        skipped = [
            r
            for (r,) in connection.exec_driver_sql(
                f"SELECT ride_id FROM ride_predictions_skipped WHERE model_version = '{version}'"
            )
        ]
    engine.dispose()
    placed = scored + skipped
    return len(rides), len(placed), len(rides.symmetric_difference(placed)) + len(placed) - len(set(placed))


def test_loading_the_same_rows_again_adds_nothing_and_ids_are_stable(db_url):
    first = load_rides(db_url, MONTH, limit=3000)
    again = load_rides(db_url, MONTH, limit=5000)
    assert (first.inserted, again.inserted, again.already_there) == (3000, 2000, 3000)
    table = RidesTable(db_url)
    assert table.count() == 5000
    with table.engine.connect() as connection:
        frame = table.after(connection, 0, 3)
    assert frame["ride_id"].tolist() == [f"green_tripdata_{MONTH}:{i}" for i in range(3)]
    assert frame["id"].is_monotonic_increasing


def test_a_rides_table_from_before_payment_type_gets_the_column_and_keeps_its_rides(db_url):
    engine = sa.create_engine(db_url)
    key = "INTEGER PRIMARY KEY" if engine.dialect.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
    with engine.begin() as connection:  # the table as the release before made it, one ride in it
        connection.exec_driver_sql(
            f"CREATE TABLE rides (id {key}, ride_id VARCHAR(64) NOT NULL UNIQUE, "
            'lpep_pickup_datetime TIMESTAMP, lpep_dropoff_datetime TIMESTAMP, "PULocationID" FLOAT, '
            '"DOLocationID" FLOAT, trip_distance FLOAT, passenger_count FLOAT, fare_amount FLOAT, tip_amount FLOAT)'
        )
        connection.exec_driver_sql(
            'INSERT INTO rides (ride_id, "PULocationID", "DOLocationID", trip_distance) VALUES (\'old\', 7, 8, 1.5)'
        )
    engine.dispose()
    load_rides(db_url, MONTH, limit=10)
    table = RidesTable(db_url)
    with table.engine.connect() as connection:
        frame = table.after(connection, 0, 11)
    assert frame["ride_id"].iloc[0] == "old" and frame["payment_type"].isna().iloc[0]
    assert frame["payment_type"].iloc[1:].notna().any()  # the TLC file's payment types, loaded


def test_only_new_rides_are_scored_and_rides_arriving_during_a_run_are_not_lost(db_url, model):
    load_rides(db_url, MONTH, limit=6000)

    def arrive_during_run(summary):
        if summary.batches == 1:  # a producer inserts while the run is between batches
            load_rides(db_url, MONTH, skip=6000, limit=2500)

    first = score_new_rides(db_url, model, batch_rows=2000, after_batch=arrive_during_run)
    assert first.rows_in == 8500 and first.watermark == RidesTable(db_url).max_id()
    assert first.scored + sum(first.skipped.values()) == 8500
    assert 3 < first.rmse < 9

    nothing = score_new_rides(db_url, model, batch_rows=2000)
    assert nothing.rows_in == 0 and nothing.watermark == first.watermark

    load_rides(db_url, MONTH, skip=8500, limit=1000)  # arrives between runs
    second = score_new_rides(db_url, model, batch_rows=2000)
    assert second.rows_in == 1000 and second.batch_ids[0][0] > first.watermark
    assert account(db_url) == (9500, 9500, 0)


def test_a_failed_batch_commits_nothing_and_the_next_run_starts_right_after_the_last_good_one(db_url, model):
    load_rides(db_url, MONTH, limit=7000)
    original, calls = model._predict, []

    def dies_on_third(features):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("the machine went away")
        return original(features)

    model._predict = dies_on_third
    with pytest.raises(MemoryError):
        score_new_rides(db_url, model, batch_rows=2000)
    model._predict = original
    engine = create_engine(db_url)
    assert Watermarks(engine).get(model.name) == 4000  # two batches committed, the third rolled back
    _, placed, misplaced = account(db_url)
    assert (placed, misplaced) == (4000, 3000)  # the other 3,000 are simply not scored yet
    resumed = score_new_rides(db_url, model, batch_rows=2000)
    assert resumed.batch_ids[0][0] == 4001 and resumed.rows_in == 3000
    assert account(db_url) == (7000, 7000, 0)


def test_a_killed_run_resumes_with_no_gap_and_no_duplicate(db_url, onnx_model_dir, tmp_path):
    """SIGKILL the real CLI mid-run: whatever committed is covered by the watermark exactly."""
    load_rides(db_url, MONTH, limit=60_000)
    command = [
        *(sys.executable, "-m", "rides.cli", "score", "--from-db", "--batch-rows", "100"),
        *("--database-url", db_url, "--model-uri", str(onnx_model_dir), "--job", "killed"),
    ]
    env = {**os.environ, "MODEL_VERSION": "3", "RIDES_HOME": str(tmp_path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # A plain reader (no write lock, unlike the job's own transactions) watches the watermark.
    watcher = sa.create_engine(db_url)

    def watermark() -> int:
        try:
            with watcher.connect() as connection:
                found = connection.exec_driver_sql("SELECT last_id FROM scoring_watermarks WHERE job = 'killed'")
                return found.scalar() or 0
        except sa.exc.DBAPIError:
            return 0  # the tables are being created

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and watermark() < 500:
        time.sleep(0.005)
    assert process.poll() is None, process.stdout.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = watermark()
    watcher.dispose()
    assert 500 <= killed_at < 60_000
    _, placed, _ = account(db_url)
    assert placed == killed_at  # nothing under the watermark missing, nothing above it written

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"{60_000 - killed_at:,} new rides (ids {killed_at + 1:,}-60,000)" in finished.stdout
    assert account(db_url) == (60_000, 60_000, 0)


def test_two_runs_at_the_same_time_never_score_a_ride_twice(db_url, model, onnx_model_dir):
    load_rides(db_url, MONTH, limit=20_000)
    summaries, errors = [], []
    start = threading.Barrier(2)

    def run():
        try:
            start.wait()
            own = load_model(str(onnx_model_dir), version="3")
            summaries.append(score_new_rides(db_url, own, batch_rows=500))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    ranges = sorted(r for s in summaries for r in s.batch_ids)
    assert sum(s.rows_in for s in summaries) == 20_000  # each ride read by exactly one run
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # disjoint batches
    assert account(db_url) == (20_000, 20_000, 0)


def test_each_job_has_its_own_watermark_and_a_new_version_carries_on(db_url, model):
    from dataclasses import replace

    load_rides(db_url, MONTH, limit=3000)
    score_new_rides(db_url, model, batch_rows=5000)
    newer = replace(model, version="4")
    load_rides(db_url, MONTH, skip=3000, limit=1000)
    carried = score_new_rides(db_url, newer, batch_rows=5000)
    assert carried.rows_in == 1000  # the promoted version scores what is new, not everything again
    backfill = score_new_rides(db_url, newer, job="rescore-v4", batch_rows=5000)
    assert backfill.rows_in == 4000
    assert PredictionTable(db_url).count("4") + PredictionTable(db_url).count("4", skipped=True) == 4000


def test_the_rides_table_can_live_in_another_database(tmp_path, model):
    source, predictions = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'out.db'}"
    load_rides(source, MONTH, limit=2500)
    summary = score_new_rides(predictions, model, source_url=source, batch_rows=1000)
    assert summary.rows_in == 2500 and summary.batches == 3
    assert PredictionTable(predictions).count() + PredictionTable(predictions).count(skipped=True) == 2500


def test_every_period_runs_again_until_stopped():
    calls, sleeps = [], []
    assert run_every(600, lambda: calls.append(1), runs=3, sleep=sleeps.append) == 3
    assert len(calls) == 3 and len(sleeps) == 2 and all(590 < s <= 600 for s in sleeps)
    assert parse_period("10m") == 600 and parse_period("30s") == 30 and parse_period("1h") == 3600
    with pytest.raises(ValueError, match="10m"):
        parse_period("ten minutes")


def test_the_scheduled_lambda_scores_new_rides_from_the_environments_database(tmp_path, onnx_model_dir, monkeypatch):
    from lambda_function import scoring_handler

    url = f"sqlite:///{tmp_path / 'rides.db'}"
    load_rides(url, MONTH, limit=4000)
    monkeypatch.setenv("MODEL_URI", str(onnx_model_dir))
    monkeypatch.setenv("MODEL_VERSION", "6")
    monkeypatch.setenv("PREDICTIONS_OUTPUT", "s3://unused/predictions")
    with pytest.raises(ValueError, match="from_db needs the environment's database"):
        scoring_handler.lambda_handler({"from_db": True}, None)
    monkeypatch.setenv("RIDES_DATABASE_URL", url)

    class Context:
        def __init__(self, left_ms):
            self.left_ms = left_ms

        def get_remaining_time_in_millis(self):
            return self.left_ms

    stopped = scoring_handler.lambda_handler({"from_db": True}, Context(30_000))
    assert stopped["from_db"]["batches"] == 0  # under a minute left: take no batch
    result = scoring_handler.lambda_handler({"from_db": True}, Context(600_000))
    assert result["model_version"] == "6"
    assert result["from_db"]["rows_in"] == 4000 and result["from_db"]["watermark"] == 4000
    assert account(url, "6") == (4000, 4000, 0)


def test_cli_load_and_score_from_db(tmp_path, onnx_model_dir, monkeypatch):
    from click.testing import CliRunner

    from rides.cli import main

    url = f"sqlite:///{tmp_path / 'rides.db'}"
    monkeypatch.setenv("MODEL_VERSION", "3")
    runner = CliRunner()
    loaded = runner.invoke(main, ["load", "--month", MONTH, "-n", "1500", "--database-url", url])
    assert loaded.exit_code == 0, loaded.output
    assert "1,500 new rides" in loaded.output
    produced = runner.invoke(
        main, ["produce", "--to-db", "--month", MONTH, "-n", "500", "--first-id", "1501", "--database-url", url]
    )
    assert produced.exit_code == 0 and "500 new rides" in produced.output, produced.output
    args = ["score", "--from-db", "--database-url", url, "--model-uri", str(onnx_model_dir), "--batch-rows", "700"]
    scored = runner.invoke(main, args)
    assert scored.exit_code == 0, scored.output
    assert "2,000 new rides (ids 1-2,000)" in scored.output and "3 batches" in scored.output
    again = runner.invoke(main, args)
    assert "no new rides after 2,000" in again.output
    wrong = runner.invoke(main, [*args, "--month", MONTH])
    assert wrong.exit_code == 2 and "--from-db reads the rides table" in wrong.output
