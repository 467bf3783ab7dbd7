"""Batch scoring: parts, database upserts, resume, skipped rows, S3 output, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rides.data import SHIPPED_DIR, Month
from rides.scoring import PredictionTable, month_range, score, score_frame
from rides.stream.model import load_model


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
    skipped: dict[str, int] = {}
    out = score_frame(frame, model, first_row=100, prefix="f", month=Month(2021, 2), skipped=skipped)
    assert out["ride_id"].tolist() == ["f:100"]
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


def _postgres_binaries() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


PG_PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 for this module (Debian's package), stopped after.
    Like Aurora it wants a password (SCRAM) and TLS on TCP (a self-signed certificate)."""
    binaries = _postgres_binaries()
    if binaries is None or shutil.which("runuser") is None or shutil.which("openssl") is None:
        pytest.skip("PostgreSQL server binaries (Debian package postgresql) or openssl are not installed")
    pytest.importorskip("psycopg")
    # The server runs as the postgres user, which cannot enter pytest's root-only temp dirs.
    home = Path(tempfile.mkdtemp(prefix="rides-pg-"))
    home.chmod(0o777)
    data = home / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    password_file = home / "password"
    password_file.write_text(PG_PASSWORD)
    password_file.chmod(0o644)
    subprocess.run(
        [
            *as_postgres,
            str(binaries / "initdb"),
            *("-D", str(data), "-U", "rides", f"--pwfile={password_file}"),
            *("--auth-local=scram-sha-256", "--auth-host=scram-sha-256"),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(home / "server.key"), "-out", str(home / "server.crt")),
        ],
        check=True,
        capture_output=True,
    )
    if as_postgres:
        subprocess.run(["chown", "postgres", str(home / "server.key"), str(home / "server.crt")], check=True)
    (home / "server.key").chmod(0o600)
    # Only TLS connections from 127.0.0.1 (hostssl), as Aurora with rds.force_ssl.
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
    subprocess.run(
        [
            *as_postgres,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data.parent / "log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {data.parent} -c ssl=on"
            f" -c ssl_cert_file={home / 'server.crt'} -c ssl_key_file={home / 'server.key'}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        from sqlalchemy.engine import URL

        yield URL.create(
            "postgresql+psycopg", "rides", PG_PASSWORD, "127.0.0.1", port, "postgres", query={"sslmode": "require"}
        ).render_as_string(hide_password=False)
    finally:
        subprocess.run(
            [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True
        )


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
    from rides.database import DatabaseConfigError, database_url

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
