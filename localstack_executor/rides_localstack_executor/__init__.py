"""A LocalStack Lambda runtime executor without Docker: each execution environment is one
long-lived host Python process (a warm container), fed invocations over a pipe.

Select it with LAMBDA_RUNTIME_EXECUTOR=local. The function's code is LocalStack's unzipped
archive; the interpreter is LAMBDA_LOCAL_PYTHON (the project's own environment, so the
function runs with exactly the packages the tests use). LAMBDA_LOCAL_ENV (a JSON object) is
added to every function's environment: what the emulator cannot give a function itself, such as
AWS_ENDPOINT_URL_DYNAMODB for a service another emulator serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from localstack import config
from localstack.services.lambda_.invocation.lambda_models import InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

# The worker: import the handler once, then answer one JSON line per invocation.
WORKER = r"""
import importlib, json, os, sys, time, traceback
# The protocol gets a private copy of stdout; everything else written to fd 1 (prints, JSON
# loggers created at import) goes to the log, before the handler is even imported.
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
module_name, function_name = os.environ["_HANDLER"].rsplit(".", 1)
handler = getattr(importlib.import_module(module_name), function_name)

class Context:
    def __init__(self, request):
        self.aws_request_id = request["invoke-id"]
        self.invoked_function_arn = request["invoked-function-arn"]
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = time.monotonic() + float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

out.write("ready\n"); out.flush()
for line in sys.stdin:
    request = json.loads(line)
    try:
        result = handler(json.loads(request["payload"]), Context(request))
        reply = {"ok": True, "payload": json.dumps(result)}
    except Exception as exc:
        traceback.print_exc()
        reply = {"ok": False, "payload": json.dumps({
            "errorMessage": str(exc), "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(exc)})}
    out.write(json.dumps(reply) + "\n"); out.flush()
"""


class LocalRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id, function_version):
        super().__init__(id, function_version)
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.log_path = Path(tempfile.gettempdir()) / "lambda-local" / f"{id}.log"

    def start(self, env_vars: dict[str, str]) -> None:
        self.function_version.config.code.prepare_for_execution()  # idempotent
        code = self.function_version.config.code.get_unzipped_code_location()
        python = os.environ.get("LAMBDA_LOCAL_PYTHON", sys.executable)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        env = {
            **keep,
            **{k: str(v) for k, v in env_vars.items()},
            **json.loads(os.environ.get("LAMBDA_LOCAL_ENV") or "{}"),
            "PYTHONPATH": str(code),
            "PYTHONUNBUFFERED": "1",
            "TZ": "UTC",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_version.id.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.function_version.config.memory_size),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [python, "-u", "-c", WORKER],
                cwd=code,
                env=env,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            raise LambdaRuntimeException(f"function failed to start: {self.get_logs()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        return f"http://127.0.0.1:{config.GATEWAY_LISTEN[0].port}/_localstack_lambda/{self.id}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                raise LambdaRuntimeException("the function's process is not running")
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.process.stdin.write(json.dumps(payload) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        logs = self.log_path.read_bytes()[offset:].decode(errors="replace") if self.log_path.exists() else ""
        if not line:
            raise LambdaRuntimeException(f"the function's process died: {logs[-2000:]}")
        reply = json.loads(line)
        return InvocationResult(
            request_id=payload["invoke-id"], payload=reply["payload"].encode(), is_error=not reply["ok"], logs=logs
        )

    def get_logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @classmethod
    def prepare_version(cls, function_version) -> None:
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version) -> None:
        # Versions share their code archive: removing it here would break the newer version
        # (LocalStack's own code store deletes it with the function).
        pass


class LocalRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "local"

    def load(self, *args, **kwargs):
        return LocalRuntimeExecutor
