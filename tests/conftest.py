"""Shared fixtures: fake AWS credentials, moto, and real models trained on shipped TLC data."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

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
    from rides.training import train

    return train(*trips)


@pytest.fixture(scope="session")
def onnx_model_dir(trained, tmp_path_factory) -> Path:
    """The project's own model, saved in MLflow's format exactly as training logs it."""
    import mlflow.onnx

    from rides.stream.features import NUMERIC_FEATURES

    path = tmp_path_factory.mktemp("models") / "onnx"
    mlflow.onnx.save_model(trained.onnx_model, str(path), metadata={"rides_features": list(NUMERIC_FEATURES)})
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

    handler_module._clients.clear()
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
    handler_module._clients.clear()
