"""`rides smoke`, the deploy's last check, against the local stack running everything it checks:
the three consumers, the decision service, the live evaluation and the web service."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from rides.local.backend import free_port

ROOT = Path(__file__).resolve().parents[1]


def record(versions: dict[str, str]) -> dict:
    return {
        "environment": "stg",
        "models": {m: {"uri": f"s3://b/{m}", "version": v} for m, v in versions.items()},
    }


@pytest.fixture
def web(stack, quick_model_dir):
    """`rides serve` on the local stack (no keys there), the quick model at version 1."""
    port = free_port()
    env = {
        **stack["env"],
        "MODEL_URI": str(quick_model_dir),
        "MODEL_NAME": "ride-duration-quick",
        "MODEL_VERSION": "1",
        "RIDES_WEB_AUTH": "none",
    }
    log = (stack["tmp"] / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rides.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, (stack["tmp"] / "serve.log").read_text()
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


def smoke(stack, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rides.cli", "smoke", *args],
        env=stack["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )


@pytest.fixture
def everything(stack, consumer, promoted_everywhere):
    consumer("--consumer", "duration", "--consumer", "fare", "--consumer", "tip", "--evaluation")
    consumer("--timeout", "600", command="decide")


def test_the_smoke_test_sees_one_ride_through_everything_deployed(stack, everything, web):
    path = stack["tmp"] / "record.json"
    versions = {"ride-duration": "1", "ride-fare": "1", "ride-tip": "1", "ride-duration-quick": "1"}
    path.write_text(json.dumps(record({**versions, "ride-duration@shadow": "4"})))
    result = smoke(stack, "--record", str(path), "--web-url", web, "--timeout", "120")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert report["predictions"] == {"ride-duration": "1", "ride-fare": "1", "ride-tip": "1"}
    assert report["decision"] in ("accept", "review") and report["decision_id"].startswith(report["ride_id"])
    assert report["evaluated"] is True
    assert report["web"]["model"] == "ride-duration-quick" and report["web"]["version"] == "1"
    assert report["web"]["ride_duration"] > 0


def test_a_model_answering_from_another_version_than_the_deployed_one_fails_it(stack, everything):
    path = stack["tmp"] / "record.json"
    path.write_text(json.dumps(record({"ride-duration": "1", "ride-fare": "2", "ride-tip": "1"})))
    result = smoke(stack, "--record", str(path), "--timeout", "60", timeout=60)
    assert result.returncode == 1
    assert "ride-fare answered from version 1, not the deployed 2" in result.stderr


def test_without_the_evaluation_and_the_decision_service_it_fails_naming_them(stack, consumer, promoted_everywhere):
    consumer("--consumer", "duration", "--consumer", "fare", "--consumer", "tip")
    result = smoke(stack, "--timeout", "20", timeout=20)
    assert result.returncode == 1
    assert "no decision" in result.stderr
    assert "the evaluation has not joined the ride's completion" in result.stderr
    assert "no ride-duration prediction" not in result.stderr  # the consumers did answer


def test_the_web_request_is_signed_as_a_function_url_with_iam_auth_requires(monkeypatch):
    """The signature a function URL checks: SigV4 for service `lambda` in the URL's region,
    over the exact body, with the caller's credentials (recomputed here independently)."""
    import hashlib
    import hmac
    from urllib.parse import urlsplit

    from rides.operate import smoke as smoke_module

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    sent = {}

    class Response:
        status_code, content = 200, b"{}"

    def fake_post(url, data, headers, timeout):
        sent.update(url=url, data=data, headers=headers)
        return Response()

    monkeypatch.setattr("requests.post", fake_post)
    url = "https://abcdefg.lambda-url.eu-west-1.on.aws/predict"
    smoke_module.signed_post(url, b'{"ride_id": 1}', {"content-type": "application/json"})
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/lambda/aws4_request" in auth
    amz_date = headers["x-amz-date"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    canonical_headers = "".join(
        f"{h}:{(urlsplit(url).hostname if h == 'host' else headers[h]).strip()}\n" for h in signed
    )
    canonical = "\n".join(
        ["POST", "/predict", "", canonical_headers, ";".join(signed), hashlib.sha256(sent["data"]).hexdigest()]
    )
    scope = f"{amz_date[:8]}/eu-west-1/lambda/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = b"AWS4secret"
    for part in (amz_date[:8], "eu-west-1", "lambda", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    assert auth.endswith("Signature=" + hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest())
