"""The deploy's smoke test: one ride through everything just deployed, or the deploy rolls back.

For one new ride it must see, before the timeout:
- a production prediction from every stream model (duration, fare, tip), each from the version
  the deploy record names (a prediction from another version means the old code still
  serves; a shadow prediction counts for nothing);
- the decision service's decision for it;
- the live evaluation's join of the ride's `ride-completed` event with the duration prediction
  (the evaluations table);
- one answer from the web service, the request signed with SigV4 as the function URL's IAM
  auth requires (and the quick model's version the record names).
Any miss fails the test with what was missing, and the deploy moves every alias back.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from rides import RidesError
from rides.operate.stream_reader import StreamReader
from rides.stream.evaluation.store import EvaluationStore
from rides.stream.evaluation.sums import TRACE_PREFIX
from rides.stream.events import completion_json, json_bytes
from rides.stream.model_specs import MODELS

STREAM_MODELS = tuple(model.model_name for model in MODELS)
QUICK_MODEL = "ride-duration-quick"


class SmokeTestFailed(RidesError):
    pass


@dataclass
class Expected:
    """What must answer: stream model → version (None: any version), the quick model's version."""

    models: dict[str, str | None]
    quick_version: str | None = None

    @classmethod
    def from_record(cls, record: dict) -> Expected:
        models = record.get("models") or {}
        stream = {m: str(v["version"]) for m, v in models.items() if m in STREAM_MODELS}
        quick = models.get(QUICK_MODEL)
        return cls(stream, str(quick["version"]) if quick else None)

    @classmethod
    def any_version(cls) -> Expected:
        return cls(dict.fromkeys(STREAM_MODELS))


@dataclass
class SmokeReport:
    ride_id: str
    predictions: dict[str, str] = field(default_factory=dict)  # model → version seen (production)
    decision: dict | None = None
    evaluated: bool | None = None  # None: not checked
    web: dict | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "ride_id": self.ride_id,
            "predictions": self.predictions,
            "decision": self.decision and self.decision.get("decision"),
            "decision_id": self.decision and self.decision.get("decision_id"),
            "evaluated": self.evaluated,
            "web": self.web,
            "seconds": round(self.seconds, 2),
        }


def _ride(ride_id: str) -> tuple[dict, bytes]:
    pickup = datetime.now(ZoneInfo("America/New_York")).replace(tzinfo=None, microsecond=0)
    event = {
        "ride_id": ride_id,
        "ride": {
            "PULocationID": 130,
            "DOLocationID": 205,
            "trip_distance": 3.66,
            "lpep_pickup_datetime": pickup.isoformat(),
        },
    }
    completion = completion_json(ride_id, pickup + timedelta(minutes=14), duration_minutes=14.0, fare_amount=15.5)
    return event, completion


def smoke_test(
    aws: dict,
    names,
    expected: Expected | None = None,
    *,
    web_url: str | None = None,
    web_api_key: str | None = None,
    evaluation: bool = True,
    timeout: float = 180.0,
    poll_seconds: float = 1.0,
    post=None,
) -> SmokeReport:
    """`aws`: boto3 clients by service (kinesis, dynamodb); `names`: the environment's
    (rides.settings.StackNames); `post`: how to send the signed web request (tests)."""
    expected = expected or Expected.any_version()
    kinesis = aws["kinesis"]
    predictions = StreamReader(kinesis, names.predictions_stream, start="LATEST")
    decisions = StreamReader(kinesis, names.decisions_stream, start="LATEST")
    predictions.poll()  # take the iterators now, so nothing can slip past them
    decisions.poll()
    ride_id = f"{TRACE_PREFIX}{uuid.uuid4().hex[:12]}"  # a probe: the evaluation keeps its join
    report = SmokeReport(ride_id)
    event, completion = _ride(ride_id)
    started = time.monotonic()
    kinesis.put_record(StreamName=names.input_stream, PartitionKey=ride_id, Data=json_bytes(event))
    if evaluation:
        kinesis.put_record(StreamName=names.completions_stream, PartitionKey=ride_id, Data=completion)
        report.evaluated = False
    wrong: list[str] = []
    if web_url:
        report.web = _ask_web(web_url, ride_id, expected, web_api_key, post, wrong)
    while time.monotonic() - started < timeout:
        for record in predictions.poll():
            body = orjson.loads(record["Data"])
            if (
                str((body.get("prediction") or {}).get("ride_id")) != ride_id
                or body.get("role", "production") != "production"
            ):
                continue
            model, version = body.get("model"), str(body.get("version"))
            want = expected.models.get(model)
            if want is not None and version != want:
                wrong.append(f"{model} answered from version {version}, not the deployed {want}")
            report.predictions[model] = version
        for record in decisions.poll():
            body = orjson.loads(record["Data"])
            if str(body.get("ride_id")) == ride_id:
                report.decision = body
        if evaluation and not report.evaluated:
            report.evaluated = _joined(aws["dynamodb"], names.evaluations_table, ride_id, expected)
        if wrong:
            break
        if _missing(report, expected, web_url) == []:
            report.seconds = time.monotonic() - started
            return report
        time.sleep(poll_seconds)
    report.seconds = time.monotonic() - started
    problems = wrong + _missing(report, expected, web_url)
    raise SmokeTestFailed(f"smoke test of ride {ride_id} failed after {report.seconds:.0f}s: " + "; ".join(problems))


def _missing(report: SmokeReport, expected: Expected, web_url: str | None) -> list[str]:
    missing = [f"no {model} prediction" for model in expected.models if model not in report.predictions]
    if report.decision is None:
        missing.append("no decision")
    if report.evaluated is False:
        missing.append("the evaluation has not joined the ride's completion with its duration prediction")
    if web_url and (report.web is None or report.web.get("error")):
        missing.append(f"no web answer ({(report.web or {}).get('error', 'not asked')})")
    return missing


def _joined(dynamodb, table: str, ride_id: str, expected: Expected) -> bool:
    """Whether the evaluation joined the smoke ride's completion with its production duration
    prediction (of the deployed version): probe rides leave a trace (rides.stream.evaluation.store)."""
    try:
        pairs = EvaluationStore(dynamodb, table).trace(ride_id) or []
    except Exception:  # the table unreadable: reported as not joined, with the rest
        return False
    want = expected.models.get("ride-duration")
    return any(
        p.model == "ride-duration" and p.role == "production" and (want is None or p.version == want) for p in pairs
    )


def _ask_web(url: str, ride_id: str, expected: Expected, api_key: str | None, post, wrong: list[str]) -> dict:
    """POST /predict, signed with SigV4 for the function URL (service `lambda`)."""
    body = orjson.dumps(
        {"ride_id": f"{ride_id}-web", "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}}
    )
    headers = {"content-type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    try:
        status, answer = (post or signed_post)(url.rstrip("/") + "/predict", body, headers)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if status != 200:
        return {"error": f"HTTP {status}: {answer[:200]!r}"}
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return {"error": f"not JSON: {answer[:200]!r}"}
    duration = parsed.get("ride_duration")
    if not isinstance(duration, float | int) or not math.isfinite(duration):
        return {"error": f"no finite ride_duration in {parsed}"}
    if expected.quick_version is not None and str(parsed.get("version")) != expected.quick_version:
        wrong.append(
            f"the web service answered from {parsed.get('model')} v{parsed.get('version')}, "
            f"not the deployed v{expected.quick_version}"
        )
    return {"model": parsed.get("model"), "version": str(parsed.get("version")), "ride_duration": duration}


def signed_post(url: str, body: bytes, headers: dict, timeout: float = 30.0) -> tuple[int, bytes]:
    """An HTTP POST signed with the caller's AWS credentials (SigV4, service `lambda`): what a
    function URL with AuthType AWS_IAM takes (the caller also needs lambda:InvokeFunctionUrl and
    lambda:InvokeFunction on the function)."""
    import boto3
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise RidesError("no AWS credentials to sign the web service request with")
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", url_region(url)).add_auth(request)
    response = requests.post(url, data=body, headers=dict(request.headers), timeout=timeout)
    return response.status_code, response.content


def url_region(url: str) -> str:
    """A function URL's region, from its host: <id>.lambda-url.<region>.on.aws."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if len(parts) >= 5 and parts[1] == "lambda-url":
        return parts[2]
    import os

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise RidesError(f"{url} is not a function URL and AWS_REGION is not set: cannot sign for a region")
    return region
