"""Shared fixtures: fake AWS credentials, moto, and real models trained on shipped TLC data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rides.local.backend import StackInfo
from rides.stream import consumer as consumer_module
from rides.stream import model as model_module

TRAIN_ROWS = 5000


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch, tmp_path):
    """No test may reach a real account or another test's state."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in (
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "MODEL_URI",
        "MODEL_VERSION",
        "DRY_RUN",
        "DEAD_LETTER_QUEUE_URL",
        "PREDICTIONS_STREAM_NAME",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_S3_ENDPOINT_URL",
        # what a CLI command run in-process sets when it finds a local stack (StackInfo.apply_to)
        *StackInfo("moto", "", 0, "").defaults(),
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RIDES_HOME", str(tmp_path / "rides-home"))
    monkeypatch.setenv("RIDES_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    model_module._cache.clear()
    consumer_module._model_faults_logged.clear()
    yield
    model_module._cache.clear()


@pytest.fixture
def aws():
    with mock_aws():
        yield {name: boto3.client(name) for name in ("kinesis", "s3", "sqs")}


@pytest.fixture(scope="session")
def trips():
    from rides.data import read_trips

    return read_trips("2021-01").head(TRAIN_ROWS), read_trips("2021-02").head(TRAIN_ROWS)


@pytest.fixture(scope="session")
def trained(trips):
    from rides.models.training import train
    from tests.helpers import cached

    return cached("trained", lambda: train(*trips))


@pytest.fixture(scope="session")
def onnx_model_dir(trained, tmp_path_factory) -> Path:
    """The project's own model, saved in MLflow's format exactly as training logs it."""
    import mlflow.onnx

    from rides.stream.features import NUMERIC_FEATURES

    path = tmp_path_factory.mktemp("models") / "onnx"
    mlflow.onnx.save_model(trained.onnx_model, str(path), metadata={"rides_features": list(NUMERIC_FEATURES)})
    return path


@pytest.fixture(scope="session")
def quick_model_dir(trained, tmp_path_factory) -> Path:
    """The web service's quick model (the course's linear baseline in ONNX), as training logs it."""
    import mlflow.onnx

    from rides.stream.features import QUICK_FEATURES

    path = tmp_path_factory.mktemp("models") / "quick"
    metadata = {"rides_features": list(QUICK_FEATURES), "kind": "quick"}
    # One file, as training logs it. (The default, external data, also rewrites the shared
    # proto in place to point at a file in this folder: a later test logging it failed.)
    mlflow.onnx.save_model(trained.quick_onnx, str(path), metadata=metadata, save_as_external_data=False)
    return path


@pytest.fixture(scope="session", params=["cloudpickle", "pickle", "skops"])
def zoomcamp_model_dir(request, trained, tmp_path_factory) -> Path:
    """A course-style model: DictVectorizer + LinearRegression, sklearn flavor, in each of
    the serialization formats MLflow has written (cloudpickle in the course, skops in MLflow 3)."""
    import mlflow.sklearn

    path = tmp_path_factory.mktemp("models") / f"sklearn-{request.param}"
    mlflow.sklearn.save_model(trained.baseline, str(path), serialization_format=request.param)
    return path


@pytest.fixture
def consumer_stack(aws, onnx_model_dir, monkeypatch):
    """The consumer's world on moto, as Terraform wires it: the predictions stream, the
    dead-letter queue, a model on S3 and the handler's environment."""
    from lambda_function import handler as handler_module
    from tests.helpers import upload_dir

    handler_module.function.clients.clear()
    aws["kinesis"].create_stream(StreamName="ride-predictions", ShardCount=1)
    dlq = aws["sqs"].create_queue(QueueName="ride-events-dlq")["QueueUrl"]
    uri = upload_dir(aws["s3"], onnx_model_dir, "rides-models-stg", "mlflow/1/models/m-abc/artifacts")
    for key, value in {
        "MODEL_URI": uri,
        "MODEL_VERSION": "7",
        "PREDICTIONS_STREAM_NAME": "ride-predictions",
        "DEAD_LETTER_QUEUE_URL": dlq,
        "PUBLISH_CONCURRENCY": "1",
    }.items():
        monkeypatch.setenv(key, value)
    yield {**aws, "dlq": dlq, "uri": uri}
    handler_module.function.clients.clear()


def _postgres_binaries() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


PG_PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for the session (Debian's package), stopped after.
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


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the session's PostgreSQL server, for one test."""
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
