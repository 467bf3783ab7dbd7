"""Integration tests run against real processes: the emulator (moto server, one request at a
time) and `rides consume` (the event-source runner calling the real handler)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from rides.local.backend import LOCAL_ENV, StackInfo, clients, stop_process
from rides.local.stack import StackNames, create_resources, start_emulator
from tests.conftest import onnx_model_dir, quick_model_dir, trained, trips  # noqa: F401 - shared fixtures
from tests.helpers import upload_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    info, proc = start_emulator(parent_pid=os.getpid(), max_lifetime=3600, log_path=log)
    yield info
    stop_process(info.pid)
    proc.wait(timeout=15)


@pytest.fixture
def on_emulator(emulator, monkeypatch):
    """The shared emulator, with this test's AWS environment pointed at it (boto3 clients made
    in the test talk to it)."""
    for key, value in emulator.connection().items():
        monkeypatch.setenv(key, value)
    return emulator


@pytest.fixture(scope="session")
def model_uri(emulator, onnx_model_dir):  # noqa: F811
    s3 = clients(emulator.env())["s3"]
    return upload_dir(s3, onnx_model_dir, "integration-models", "mlflow/1/models/m-it/artifacts")


@pytest.fixture
def stack(emulator, model_uri, tmp_path, monkeypatch):
    """A fresh set of resources (unique names) on the shared emulator."""
    suffix = uuid.uuid4().hex[:8]
    names = StackNames(
        input_stream=f"ride-events-{suffix}",
        predictions_stream=f"ride-predictions-{suffix}",
        decisions_stream=f"ride-decisions-{suffix}",
        dead_letter_queue=f"dlq-{suffix}",
        failed_batches_queue=f"failed-{suffix}",
        model_bucket="integration-models",
        decisions_table=f"decisions-{suffix}",
    )
    env = {**LOCAL_ENV, "AWS_ENDPOINT_URL": emulator.endpoint}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    created = create_resources(env, names)
    aws = {name: boto3.client(name) for name in ("kinesis", "sqs", "s3")}
    consumer_env = {
        **os.environ,
        **env,
        "RIDES_HOME": str(tmp_path / "home"),
        "MODEL_URI": model_uri,
        "MODEL_VERSION": "1",
        "PREDICTIONS_STREAM_NAME": names.predictions_stream,
        "DEAD_LETTER_QUEUE_URL": created[f"sqs:{names.dead_letter_queue}"],
        # every RIDES_<NAME> override, so CLI processes use this test's resources
        **{f"RIDES_{f.name.upper()}": getattr(names, f.name) for f in dataclasses.fields(names)},
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    return {"names": names, "created": created, "env": consumer_env, "tmp": tmp_path, **aws}


class Consumer:
    """`rides consume` as a child process that a test can kill and restart."""

    def __init__(self, stack, *extra: str, env: dict | None = None, command: str = "consume"):
        self.stack = stack
        self.extra = extra
        self.command = command
        self.env = {**stack["env"], **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = stack["tmp"] / f"consumer-{uuid.uuid4().hex[:6]}.log"

    def start(self) -> Consumer:
        if self.command == "consume":
            args = ["consume", "--stream", self.stack["names"].input_stream, "--window", "0"]
        else:
            args = [self.command]
        command = [sys.executable, "-m", "rides.cli", *args, "--max-seconds", "600", *self.extra]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def consumer(stack):
    started: list[Consumer] = []

    def start(*extra: str, env: dict | None = None, command: str = "consume") -> Consumer:
        started.append(Consumer(stack, *extra, env=env, command=command).start())
        return started[-1]

    yield start
    for c in started:
        c.kill()


@pytest.fixture(scope="session")
def model_dirs(onnx_model_dir, trips, tmp_path_factory):  # noqa: F811
    """Every consumer's model in MLflow's format on disk: the duration model plus small fare
    and tip models trained on the same trips."""
    import mlflow.onnx

    from rides.models.training import train
    from rides.settings import CONSUMERS
    from rides.stream.features import NUMERIC_FEATURES

    dirs = {"ride-duration": onnx_model_dir}
    for spec in CONSUMERS.values():
        if spec.model_name in dirs:
            continue
        fitted = train(*trips, target=spec.target)
        path = tmp_path_factory.mktemp("models") / spec.key
        mlflow.onnx.save_model(fitted.onnx_model, str(path), metadata={"rides_features": list(NUMERIC_FEATURES)})
        dirs[spec.model_name] = path
    return dirs


@pytest.fixture(scope="session")
def all_model_uris(emulator, model_dirs, model_uri):
    """Every consumer's model on the emulator's S3."""
    s3 = clients(emulator.env())["s3"]
    uris = {"ride-duration": model_uri}
    for name, path in model_dirs.items():
        if name not in uris:
            uris[name] = upload_dir(s3, path, "integration-models", f"mlflow/{path.name}/artifacts")
    return uris


@pytest.fixture(scope="session")
def localstack(request, emulator):
    """LocalStack in host mode (the project's executor runs functions on this Python), started
    once; DynamoDB, which it cannot host here, is the moto server's. With --localstack-endpoint,
    an already running LocalStack instead (CI's container, which hosts DynamoDB itself)."""
    if request.config.getoption("--backend") == "moto":
        pytest.skip("--backend moto")
    endpoint = request.config.getoption("--localstack-endpoint")
    if endpoint:
        yield StackInfo("localstack", endpoint, 0, "")
        return
    from rides.local import localstack as backend

    old_home = os.environ.get("RIDES_HOME")
    # A fixed place so the LocalStack environment (~500 MB) is built once per machine.
    os.environ["RIDES_HOME"] = os.environ.get("RIDES_LOCALSTACK_HOME", str(backend.ROOT / ".rides"))
    try:
        info, proc = backend.start(lambda_env={"AWS_ENDPOINT_URL_DYNAMODB": emulator.endpoint})
    finally:
        if old_home is None:
            os.environ.pop("RIDES_HOME", None)
        else:
            os.environ["RIDES_HOME"] = old_home
    yield info
    stop_process(proc.pid, timeout=20)


@pytest.fixture
def promoted_everywhere(stack, all_model_uris, monkeypatch):
    """What `rides promote` leaves for the local runners: one control file per model."""
    from rides.models.promote import roll_out_local
    from rides.models.registry import Registered

    monkeypatch.setenv("RIDES_HOME", stack["env"]["RIDES_HOME"])
    for name, uri in all_model_uris.items():
        roll_out_local(Registered(name, "1", uri, "run", "production"))
    return all_model_uris


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        choices=["moto", "localstack", "both"],
        default="both",
        help="Which local AWS backends the integration tests run against.",
    )
    parser.addoption(
        "--localstack-endpoint",
        default=None,
        help="Use the LocalStack already running there (e.g. a container) instead of starting one.",
    )
    parser.addoption(
        "--lambda-zip",
        default=None,
        help="The functions' zip for the Terraform apply (python -m rides.packaging build/lambda.zip); "
        "default: the code alone, which the host-mode LocalStack runs on this Python.",
    )


REPORT_KEY = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def terraform_report(request) -> list[str]:
    """Lines printed at the end of the run (what was applied, how many resources, destroyed)."""
    return request.config.stash.setdefault(REPORT_KEY, [])


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(REPORT_KEY, []):
        terminalreporter.write_line(line)
