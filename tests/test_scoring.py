"""Batch scoring: parts, database upserts, resume, skipped rows, S3 output, PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rides.batch.scoring import PredictionTable, count_reasons, month_range, ride_ids, score, score_frame
from rides.data import SHIPPED_DIR, Month
from rides.stream.model import load_model
from tests.conftest import PG_PASSWORD


@pytest.fixture
def model(onnx_model_dir):
    return load_model(str(onnx_model_dir), version="3")


@pytest.fixture
def small_month(tmp_path) -> Path:
    """The first 5,000 rows of a real month, under its TLC file name."""
    path = tmp_path / "green_tripdata_2021-02.parquet"
    pq.write_table(pq.read_table(SHIPPED_DIR / "green_tripdata_2021-02.parquet").slice(0, 5000), path)
    return path


def test_score_frame_skips_bad_rows_with_reasons(model):
    frame = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(
                ["2021-02-01 08:00:00", "2021-02-01 09:00:00", "2021-01-31 23:00:00", "2021-02-02 10:00:00", None]
            ),
            "lpep_dropoff_datetime": pd.to_datetime(
                ["2021-02-01 08:20:00", "2021-02-01 09:10:00", "2021-01-31 23:30:00", "2021-02-02 10:30:00", None]
            ),
            "PULocationID": [130.0, 0.0, 1.0, 74.0, 5.0],
            "DOLocationID": [205.0, 1.0, 2.0, 75.0, 6.0],
            "trip_distance": [3.66, 1.0, 1.0, np.nan, 1.0],
            "passenger_count": [1.0, 1.0, np.nan, 2.0, 1.0],
        }
    )
    out, rejected = score_frame(frame, model, ride_ids=ride_ids("f", 100, 5), month=Month(2021, 2))
    skipped: dict[str, int] = {}
    count_reasons(rejected, skipped)
    assert out["ride_id"].tolist() == ["f:100"]
    assert rejected["ride_id"].tolist() == ["f:101", "f:102", "f:103", "f:104"]
    assert out["actual_duration"].tolist() == [20.0]
    assert out["model_version"].tolist() == ["3"]
    assert skipped == {
        "PULocationID outside 1-265": 1,
        "trip_distance missing, negative or infinite": 1,
        "pickup time missing": 1,
        "pickup outside 2021-02": 1,
    }


def test_scores_a_month_into_parts_and_the_database_idempotently(model, small_month, tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    out = tmp_path / "out"
    first = score(str(small_month), model, output=str(out), database_url=url, batch_rows=2000, progress=False)
    assert first.rows_in == 5000 and first.parts_written == 3
    assert first.scored + sum(first.skipped.values()) == 5000
    assert 3 < first.rmse < 9 and first.compared > 4000
    frame = pq.read_table(out).to_pandas()
    assert len(frame) == first.scored and frame["ride_id"].is_unique
    table = PredictionTable(url)
    assert table.count("3") == first.scored
    _check_rows(table, frame)

    again = score(str(small_month), model, output=str(out), database_url=url, batch_rows=2000, progress=False)
    assert again.parts_resumed == 3 and again.parts_written == 0
    assert again.scored == first.scored and again.skipped == first.skipped
    assert PredictionTable(url).count() == first.scored  # upsert: no duplicates
    # every row is in one known place: predicted, or skipped with its reason
    assert PredictionTable(url).count(skipped=True) == sum(first.skipped.values())


def test_parts_are_reused_only_when_computed_from_the_same_input_and_model(model, small_month, tmp_path):
    """A resume that changed the batch size, the model or the file must not mix old parts in."""
    out = tmp_path / "out"

    def run(batch_rows, scoring_model=model, source=small_month):
        return score(
            str(source), scoring_model, output=str(out), database_url="", batch_rows=batch_rows, progress=False
        )

    def ride_ids_in_output() -> list[str]:
        return pq.read_table(out).to_pandas()["ride_id"].tolist()

    first = run(2000)
    reference = ride_ids_in_output()
    resized = run(1000)  # parts 0-2 exist but cover other rows; 3-4 are new
    assert (resized.parts_resumed, resized.parts_replaced, resized.parts_written) == (0, 3, 5)
    assert ride_ids_in_output() == reference and resized.scored == first.scored
    shrunk = run(2500)  # two parts now: the other three are removed, not left to be read as output
    assert (shrunk.parts_replaced, shrunk.parts_removed) == (2, 3)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert ride_ids_in_output() == reference

    other_version = replace(model, version="4")
    assert run(2500, other_version).parts_replaced == 2
    assert set(pq.read_table(out).to_pandas()["model_version"]) == {"4"}

    changed = tmp_path / "changed" / small_month.name  # same name, other rows
    changed.parent.mkdir()
    pq.write_table(pq.read_table(SHIPPED_DIR / small_month.name).slice(100, 4000), changed)
    assert run(2500, other_version, changed).parts_replaced == 2
    assert run(2500, other_version, changed).parts_resumed == 2


def _check_rows(table: PredictionTable, frame: pd.DataFrame) -> None:
    """Rows read back through SQLAlchemy equal the parquet rows, types included."""
    expected = frame.set_index("ride_id")
    for row in table.rows(20):
        parquet = expected.loc[row["ride_id"]]
        assert row["lpep_pickup_datetime"] == parquet["lpep_pickup_datetime"].to_pydatetime()
        assert row["predicted_duration"] == pytest.approx(parquet["predicted_duration"])
        assert (row["passenger_count"] is None) == bool(np.isnan(parquet["passenger_count"]))
        assert row["PULocationID"] == parquet["PULocationID"]


def test_a_crashed_run_resumes_where_it_stopped(model, small_month, tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    out = tmp_path / "out"
    original = model._predict
    calls = []

    def flaky(features):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("the machine went away")
        return original(features)

    model._predict = flaky
    with pytest.raises(MemoryError):
        score(str(small_month), model, output=str(out), database_url=url, batch_rows=2000, progress=False)
    model._predict = original
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]  # no half-written part
    resumed = score(str(small_month), model, output=str(out), database_url=url, batch_rows=2000, progress=False)
    assert (resumed.parts_resumed, resumed.parts_written) == (1, 2)
    clean = score(
        str(small_month), model, output=str(tmp_path / "clean"), database_url="", batch_rows=2000, progress=False
    )
    assert resumed.scored == clean.scored
    assert PredictionTable(url).count() == clean.scored


def test_output_to_s3(aws, model, small_month):
    aws["s3"].create_bucket(Bucket="rides-predictions")
    summary = score(
        str(small_month),
        model,
        output="s3://rides-predictions/duration/2021-02",
        database_url="",
        batch_rows=2500,
        progress=False,
    )
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket="rides-predictions")["Contents"]]
    assert keys == ["duration/2021-02/part-00000.parquet", "duration/2021-02/part-00001.parquet"]
    again = score(
        str(small_month),
        model,
        output="s3://rides-predictions/duration/2021-02",
        database_url="",
        batch_rows=2500,
        progress=False,
    )
    assert again.parts_resumed == 2 and again.scored == summary.scored


def test_month_range():
    assert month_range("2022-11", "2023-02") == ["2022-11", "2022-12", "2023-01", "2023-02"]
    with pytest.raises(ValueError):
        month_range("2023-02", "2023-01")


def test_postgresql_works_the_same(model, small_month, tmp_path, postgres_url):
    first = score(
        str(small_month), model, output=str(tmp_path / "o"), database_url=postgres_url, batch_rows=2000, progress=False
    )
    again = score(
        str(small_month), model, output=str(tmp_path / "o2"), database_url=postgres_url, batch_rows=2000, progress=False
    )
    assert again.parts_written == 3  # a new output, yet the table gets no duplicates
    table = PredictionTable(postgres_url)
    assert table.count("3") == first.scored
    _check_rows(table, pq.read_table(tmp_path / "o").to_pandas())


def test_scheduled_lambda_scores_last_month_or_the_event_months(aws, onnx_model_dir, monkeypatch):
    from datetime import date

    from lambda_function import scoring_handler

    assert scoring_handler.previous_month(date(2024, 1, 15)) == "2023-12"
    assert scoring_handler.previous_month(date(2024, 3, 1)) == "2024-02"
    assert scoring_handler.sources({}) == [scoring_handler.previous_month()]
    assert scoring_handler.sources({"months": "2021-01:2021-02"}) == ["2021-01", "2021-02"]

    aws["s3"].create_bucket(Bucket="rides-models-stg")
    monkeypatch.setenv("MODEL_URI", str(onnx_model_dir))
    monkeypatch.setenv("MODEL_VERSION", "4")
    monkeypatch.setenv("PREDICTIONS_OUTPUT", "s3://rides-models-stg/predictions")
    result = scoring_handler.lambda_handler({"month": "2021-02"}, None)
    [month] = result["results"]
    assert result["model_version"] == "4"
    assert month["scored"] > 60_000 and month["parts_resumed"] == 0
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket="rides-models-stg", Prefix="predictions/")["Contents"]]
    assert keys and all(k.startswith("predictions/2021-02/model=4/part-") for k in keys)


def test_on_aws_the_job_reads_its_database_credentials_from_secrets_manager(
    aws, onnx_model_dir, monkeypatch, postgres_url
):
    """As the Terraform wires it: the cluster's address in the environment, the user and password
    only in the RDS-managed secret; a wrong password fails loudly instead of skipping the table."""
    import json

    import boto3
    from sqlalchemy.engine import make_url

    from lambda_function import scoring_handler
    from rides.batch.database import DatabaseConfigError, database_url

    url = make_url(postgres_url)
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="rds!cluster-1", SecretString=json.dumps({"username": "rides", "password": "x"}))[
        "ARN"
    ]
    env = {
        "RIDES_DATABASE_SECRET_ARN": arn,
        "RIDES_DATABASE_HOST": url.host,
        "RIDES_DATABASE_PORT": str(url.port),
        "RIDES_DATABASE_NAME": url.database,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RIDES_DATABASE_URL", raising=False)
    aws["s3"].create_bucket(Bucket="rides-models-stg")
    monkeypatch.setenv("MODEL_URI", str(onnx_model_dir))
    monkeypatch.setenv("MODEL_VERSION", "5")
    monkeypatch.setenv("PREDICTIONS_OUTPUT", "s3://rides-models-stg/predictions")
    with pytest.raises(Exception, match="password authentication failed"):
        scoring_handler.lambda_handler({"month": "2021-02"}, None)

    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "rides", "password": PG_PASSWORD}))
    result = scoring_handler.lambda_handler({"month": "2021-02"}, None)
    [month] = result["results"]
    assert month["scored"] > 60_000
    assert PredictionTable(postgres_url).count("5") == month["scored"]
    assert "sslmode=require" in database_url(env)
    with pytest.raises(DatabaseConfigError, match="RIDES_DATABASE_HOST"):
        database_url({"RIDES_DATABASE_SECRET_ARN": arn, "RIDES_DATABASE_NAME": "rides"})
