"""`rides stack up/down/status`: the embedded emulator process and the resources on it.

The emulator runs as a background process on 127.0.0.1 with a pid file and a log under the
state directory; `down` stops exactly the process it started. Resources get the same names
as the Terraform staging defaults (rides.settings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from botocore.exceptions import ClientError

from rides.local.backend import LOCAL_ENV, StackError, StackInfo, alive, clients, free_port, stop_process
from rides.settings import StackNames, state_dir

DEFAULT_PORT = int(os.environ.get("RIDES_EMULATOR_PORT", "4566"))


def _info_path() -> Path:
    return state_dir() / "stack.json"


def _is_our_emulator(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return alive(pid)
    return b"rides.local.emulator" in cmdline or b"localstack.runtime.main" in cmdline


def wait_healthy(endpoint: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"emulator exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/_rides/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise StackError(f"emulator at {endpoint} did not become healthy in {timeout:.0f}s")


def start_emulator(
    port: int | None = None,
    *,
    parent_pid: int | None = None,
    max_lifetime: float | None = None,
    log_path: Path | None = None,
    aws_limits: bool | None = None,
) -> tuple[StackInfo, subprocess.Popen]:
    """Start `python -m rides.local.emulator` in the background and wait for its health check.
    `aws_limits`: enforce Kinesis's limits (rides.local.limits); None: RIDES_AWS_LIMITS, else on."""
    port = port or free_port()
    log_path = log_path or state_dir() / "emulator.log"
    command = [sys.executable, "-m", "rides.local.emulator", "--host", "127.0.0.1", "--port", str(port)]
    if parent_pid:
        command += ["--parent-pid", str(parent_pid)]
    if max_lifetime:
        command += ["--max-lifetime", str(max_lifetime)]
    if aws_limits is False:
        command += ["--no-aws-limits"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **LOCAL_ENV},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(endpoint, proc=proc)
    except StackError:
        proc.kill()
        raise StackError(f"the emulator did not start; see {log_path}") from None
    return StackInfo("moto", endpoint, proc.pid, str(log_path)), proc


def _load_info() -> StackInfo | None:
    """What `up` wrote, whether or not that process still runs."""
    try:
        return StackInfo(**json.loads(_info_path().read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def read_info() -> StackInfo | None:
    """The running local stack, if any."""
    info = _load_info()
    return info if info is not None and alive(info.pid) else None


def up(
    port: int = DEFAULT_PORT,
    names: StackNames | None = None,
    *,
    shards: int = 2,
    backend: str = "moto",
    aws_limits: bool | None = None,
) -> StackInfo:
    """Start the emulator (unless ours is running) and create the resources, idempotently."""
    info = read_info()
    if info is not None and info.backend != backend:
        raise StackError(f"a {info.backend} stack is running at {info.endpoint}: `rides stack down` first")
    if info is None:
        if backend == "localstack":
            from rides.local import localstack

            info, _ = localstack.start(port)
        else:
            info, _ = start_emulator(port, aws_limits=aws_limits)
        _info_path().write_text(json.dumps(asdict(info)))
    create_resources(info.env(), names or StackNames.from_env(), shards=shards, decisions_table=backend != "localstack")
    return info


def down() -> StackInfo | None:
    info = _load_info()
    if info is None:
        return None
    if alive(info.pid) and _is_our_emulator(info.pid):
        stop_process(info.pid)
    _info_path().unlink(missing_ok=True)
    return info


def evaluations_table_spec(name: str) -> dict:
    """Live evaluation's table as Terraform declares it (rides.stream.evaluation.store)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    }


def decisions_table_spec(name: str) -> dict:
    """The decisions table as Terraform declares it: ride id key, the sweep's sparse, sharded
    index of rides that are due (rides.stream.decision.store)."""
    from rides.stream.decision import DUE_INDEX

    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "ride_id", "AttributeType": "S"},
            {"AttributeName": "due_shard", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        "KeySchema": [{"AttributeName": "ride_id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": DUE_INDEX,
                "KeySchema": [
                    {"AttributeName": "due_shard", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }


def create_resources(
    env: dict[str, str],
    names: StackNames,
    *,
    shards: int = 2,
    decisions_table: bool = True,
) -> dict[str, str]:
    """What Terraform creates, by the same names; safe to run again."""
    c = clients(env)
    created: dict[str, str] = {}
    from rides.settings import CONSUMERS

    for stream, count in (
        (names.input_stream, shards),
        # One prediction per consumer for each ride, as Terraform sizes it.
        (names.predictions_stream, shards * len(CONSUMERS)),
        (names.decisions_stream, 1),
        (names.completions_stream, shards),
    ):
        try:
            c["kinesis"].create_stream(StreamName=stream, ShardCount=count)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        c["kinesis"].get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
        created[f"kinesis:{stream}"] = c["kinesis"].describe_stream_summary(StreamName=stream)[
            "StreamDescriptionSummary"
        ]["StreamARN"]
    try:
        c["s3"].create_bucket(Bucket=names.model_bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    c["s3"].put_bucket_versioning(Bucket=names.model_bucket, VersioningConfiguration={"Status": "Enabled"})
    created[f"s3:{names.model_bucket}"] = f"s3://{names.model_bucket}"
    for queue in (names.dead_letter_queue, names.failed_batches_queue, names.review_queue):
        created[f"sqs:{queue}"] = c["sqs"].create_queue(
            QueueName=queue, Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
    if not decisions_table:  # LocalStack's DynamoDB needs a download this machine cannot make
        return created
    for table, spec in (
        (names.decisions_table, decisions_table_spec),
        (names.evaluations_table, evaluations_table_spec),
    ):
        try:
            c["dynamodb"].create_table(**spec(table))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        created[f"dynamodb:{table}"] = table
    return created
