"""LocalStack as the second backend: host mode (no Docker), its own virtual environment on
Python >= 3.12, the project's Lambda executor plugin, and the consumer deployed for real
(zip function + Kinesis event source mapping with the Terraform's settings).

`rides stack up --backend localstack` uses this; integration-test/test_localstack.py too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rides.local.backend import LOCAL_ENV, StackError, StackInfo, clients, free_port, stop_process
from rides.settings import EventSourceSettings, StackNames, event_source_for, state_dir

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR_DIR = ROOT / "localstack_executor"
# DynamoDB is left out: LocalStack runs it on DynamoDB Local, a download from outside the
# package registries; the decision service's tests run on the moto backend, and infra/'s apply
# sends DynamoDB to moto (lambda_env). SNS, EventBridge, KMS: the alarm topic, the sweep's
# schedule, the model bucket's default encryption.
SERVICES = "kinesis,sqs,s3,lambda,iam,sts,logs,cloudwatch,sns,events,kms"


def find_python() -> Path:
    """The newest Python >= 3.12 on this machine (LocalStack's stores need 3.12 syntax)."""
    candidates: list[tuple[tuple[int, int], Path]] = []
    names = [f"python3.{minor}" for minor in range(20, 11, -1)]
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    dirs += sorted(pyenv.glob("3.1[2-9]*/bin")) if pyenv.exists() else []
    for directory in dirs:
        for name in names:
            path = directory / name
            if path.exists():
                out = subprocess.run(
                    [str(path), "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True
                )
                if out.returncode == 0:
                    major, minor = map(int, out.stdout.split())
                    if (major, minor) >= (3, 12):
                        candidates.append(((major, minor), path))
    if not candidates:
        raise StackError(
            "LocalStack needs Python >= 3.12: looked for python3.12 ... python3.20 on PATH and "
            f"under {pyenv}; install one (e.g. `pyenv install 3.13`)"
        )
    return max(candidates)[1]


def home() -> Path:
    return state_dir() / "localstack"


def ensure_venv() -> Path:
    """LocalStack's own environment with the pinned packages and our executor plugin."""
    venv = home() / "venv"
    stamp = venv / ".rides-installed"
    wanted = (
        (EXECUTOR_DIR / "requirements.txt").read_text()
        + (EXECUTOR_DIR / "pyproject.toml").read_text()
        + (EXECUTOR_DIR / "rides_localstack_executor" / "__init__.py").read_text()
    )
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    if not (venv / "bin" / "python").exists():
        subprocess.run([str(find_python()), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(EXECUTOR_DIR / "requirements.txt")], check=True)
    # Built from a copy: an in-tree build would leave build/ and egg-info in the project.
    build = home() / "executor-src"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(EXECUTOR_DIR, build)
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(build)], check=True)
    stamp.write_text(wanted)
    return venv


def start(
    port: int | None = None, *, lambda_python: str | None = None, lambda_env: dict[str, str] | None = None
) -> tuple[StackInfo, subprocess.Popen]:
    """Start LocalStack on 127.0.0.1 and wait for its health check (and the services we use).
    `lambda_env` is added to every function's environment (the executor's LAMBDA_LOCAL_ENV)."""
    venv = ensure_venv()
    port = port or free_port()
    root = home() / "fs"
    run_dir = home() / "run"  # no folder here shadows the plugin's package
    for directory in (root, run_dir, home() / "config", home() / "cache"):
        directory.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_", "PYTHON"))},
        **LOCAL_ENV,
        "OVERRIDE_IN_DOCKER": "0",
        "FILESYSTEM_ROOT": str(root),
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "SERVICES": SERVICES,
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "CONFIG_DIR": str(home() / "config"),
        "XDG_CACHE_HOME": str(home() / "cache"),
        "LAMBDA_RUNTIME_EXECUTOR": "local",
        "LAMBDA_LOCAL_PYTHON": lambda_python or sys.executable,
        "LAMBDA_LOCAL_ENV": json.dumps(lambda_env or {}),
    }
    log_path = home() / "localstack.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", "localstack.runtime.main"],
            cwd=run_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"LocalStack exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as response:
                if response.status == 200 and b'"kinesis": "available"' in response.read():
                    return StackInfo("localstack", endpoint, proc.pid, str(log_path)), proc
        except OSError:
            pass
        time.sleep(0.5)
    stop_process(proc.pid, timeout=15)
    raise StackError(f"LocalStack did not become healthy in 90 s; see {log_path}")


def function_zip() -> bytes:
    """The consumer as a zip: the code lambda_function/Dockerfile ships (rides.packaging). Its
    dependencies come from the interpreter that runs it (the project's environment)."""
    from rides.packaging import code_zip

    return code_zip()


def deploy_consumer(
    info: StackInfo,
    names: StackNames,
    *,
    model_uri: str,
    model_version: str = "",
    settings: EventSourceSettings | None = None,
    extra_env: dict | None = None,
    function_name: str | None = None,
) -> dict:
    """The consumer Lambda and its event source mapping, as Terraform declares them."""
    settings = event_source_for("consumer", settings)
    c = clients(info.env())
    import boto3

    session_kwargs = {
        "endpoint_url": info.endpoint,
        "region_name": LOCAL_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    lam, iam = boto3.client("lambda", **session_kwargs), boto3.client("iam", **session_kwargs)
    function_name = function_name or names.consumer_function
    role = iam.create_role(
        RoleName=f"{function_name}-role",
        AssumeRolePolicyDocument=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},'
            '"Action":"sts:AssumeRole"}]}'
        ),
    )["Role"]["Arn"]
    queue_urls = {
        name: c["sqs"].get_queue_url(QueueName=name)["QueueUrl"]
        for name in (names.dead_letter_queue, names.failed_batches_queue)
    }
    env = {
        "MODEL_URI": model_uri,
        "MODEL_VERSION": model_version,
        "MODEL_NAME": "ride-duration",
        "PREDICTION_FIELD": "ride_duration",
        "PREDICTIONS_STREAM_NAME": names.predictions_stream,
        "DEAD_LETTER_QUEUE_URL": queue_urls[names.dead_letter_queue],
        "DRY_RUN": "false",
        "PUBLISH_CONCURRENCY": "4",
        "PUBLISH_AGGREGATED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        **(extra_env or {}),
    }
    lam.create_function(
        FunctionName=function_name,
        Runtime="python3.12",
        Role=role,
        Handler="lambda_function.handler.lambda_handler",
        Code={"ZipFile": function_zip()},
        Timeout=60,
        MemorySize=1024,
        Environment={"Variables": env},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=function_name)
    failures_arn = c["sqs"].get_queue_attributes(
        QueueUrl=queue_urls[names.failed_batches_queue], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    stream_arn = c["kinesis"].describe_stream_summary(StreamName=names.input_stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    mapping = lam.create_event_source_mapping(
        EventSourceArn=stream_arn,
        FunctionName=function_name,
        StartingPosition=settings.starting_position,
        BatchSize=settings.batch_size,
        MaximumBatchingWindowInSeconds=settings.maximum_batching_window_in_seconds,
        ParallelizationFactor=settings.parallelization_factor,
        BisectBatchOnFunctionError=settings.bisect_batch_on_function_error,
        MaximumRetryAttempts=settings.maximum_retry_attempts,
        MaximumRecordAgeInSeconds=settings.maximum_record_age_in_seconds,
        FunctionResponseTypes=list(settings.function_response_types),
        DestinationConfig={"OnFailure": {"Destination": failures_arn}},
        # As in Terraform: without a model the mapping waits (`rides promote --to lambda` enables it).
        Enabled=bool(model_uri),
    )
    deadline = time.monotonic() + 60
    wanted = "Enabled" if model_uri else "Disabled"
    while lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] != wanted:
        if time.monotonic() > deadline:
            raise StackError("the event source mapping did not become Enabled")
        time.sleep(0.5)
    return {"function": function_name, "mapping": mapping["UUID"], "env": env, **asdict(settings)}
