"""What every local backend shares (the moto emulator, LocalStack): fake credentials, the
description a running backend is known by, its errors, ports, and stopping processes."""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import boto3

from rides import RidesError

# Fixed fake credentials: the local stack must never reach a real account by accident.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class StackError(RidesError):
    """The local stack cannot start, stop or be found."""


@dataclass
class StackInfo:
    backend: str
    endpoint: str
    pid: int
    log: str

    def connection(self) -> dict[str, str]:
        """What points boto3 (and MLflow) at this stack: these replace the caller's."""
        # MLflow caches its S3 client by MLFLOW_S3_ENDPOINT_URL: without it a client built
        # earlier in the process (for another endpoint) would upload models to real S3.
        return {**LOCAL_ENV, "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def defaults(self) -> dict[str, str]:
        """The local stack's defaults: they fill in, and never replace what the user set.
        The web service serves without API keys only here, on the local stack (rides.web.auth);
        the consumers and the decision service publish KPL-aggregated, as Terraform has them."""
        return {"RIDES_WEB_AUTH": "none", "PUBLISH_AGGREGATED": "true"}

    def env(self) -> dict[str, str]:
        return {**self.defaults(), **self.connection()}

    def apply_to(self, environ) -> None:
        """Point a process's environment at this stack, keeping every setting the user made."""
        environ.update(self.connection())
        for key, value in self.defaults().items():
            environ.setdefault(key, value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def stop_process(pid: int, timeout: float = 10.0) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def clients(env: dict[str, str]):
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env["AWS_DEFAULT_REGION"],
    )
    endpoint = env["AWS_ENDPOINT_URL"]
    return {
        name: session.client(name, endpoint_url=env.get(f"AWS_ENDPOINT_URL_{name.upper()}") or endpoint)
        for name in ("kinesis", "s3", "sqs", "dynamodb")
    }
