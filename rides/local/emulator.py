"""The embedded AWS emulator: moto in server mode, one request at a time per service.

moto's Kinesis loses records when PutRecords calls run concurrently (4 writer threads,
10,000 records put, 9,913 readable). Connections are still accepted by many threads, but a
lock per service lets one request at a time into each of moto's backends. SQS long polls
are the exception: moto sleeps inside them, and holding the lock there would stall every
other client.

AWS's Kinesis limits (record size, PutRecords size and count, per-shard write and read rates)
are enforced in front of moto (rides.local.limits); --no-aws-limits turns them off.

Run: python -m rides.local.emulator --port 4566 [--no-aws-limits] [--parent-pid PID]
     [--max-lifetime S]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import threading
import time

from rides.local.backend import alive
from rides.local.limits import TARGET, KinesisLimits, Refused, body_json, shard_iterator_parts
from rides.local.meter import (
    DynamoTables,
    Meter,
    dynamodb_before,
    dynamodb_units,
    firehose_billed_bytes,
    function_of,
    on_demand_kb,
    put_payload_units,
    sqs_requests,
    tables_named,
)
from rides.local.moto_patches import copy_each_table_once

DYNAMODB = "DynamoDB_20120810."
SLOW_SECONDS = 0.5
HEALTH_PATH = "/_rides/health"
FAULTS_PATH = "/_rides/faults"
METER_PATH = "/_rides/meter"  # GET: what each function's calls would bill on AWS; DELETE: start again


class SerializingMiddleware:
    def __init__(self, app, *, aws_limits: bool = True):
        self.app = app
        # One lock per service: each moto backend sees one request at a time, but a DynamoDB
        # call (the decision service makes one per ride) does not hold up a Kinesis call.
        self.locks: dict[str, threading.Lock] = {}
        self.locks_lock = threading.Lock()
        self.started = time.time()
        self.requests = 0
        self.faults = FaultInjector()
        self.limits = KinesisLimits(enabled=aws_limits)
        self.meter = Meter()

    def lock_for(self, environ) -> threading.Lock:
        # JSON-protocol services name themselves in X-Amz-Target (Kinesis_20131202.PutRecords);
        # the rest (S3, query-protocol services) share one lock.
        service = (environ.get("HTTP_X_AMZ_TARGET") or "other").split(".", 1)[0]
        with self.locks_lock:
            return self.locks.setdefault(service, threading.Lock())

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == FAULTS_PATH:
            return self.faults.admin(environ, start_response)
        if environ.get("PATH_INFO") == METER_PATH:
            if environ.get("REQUEST_METHOD") == "DELETE":
                self.meter.clear()
            return _json(start_response, {"usage": self.meter.snapshot()})
        injected = self.faults.intercept(environ, start_response)
        if injected is not None:
            return injected
        if environ.get("PATH_INFO") == HEALTH_PATH:
            health = {
                "status": "running",
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests,
                "aws_limits": self.limits.enabled,
                "limited": self.limits.counts,
            }
            return _json(start_response, health)
        self.requests += 1
        target = environ.get("HTTP_X_AMZ_TARGET") or ""
        if target == "AmazonSQS.ReceiveMessage":
            return self.app(environ, start_response)
        waited = time.monotonic()
        with self.lock_for(environ):
            started = time.monotonic()
            try:
                if self.faults.loses_answer(target):
                    self.answer(environ, lambda status, headers, exc_info=None: None, target)
                    return _error(start_response, 500, "InternalServerError", "the answer was lost (injected)")
                return self.answer(environ, start_response, target)
            finally:
                took = time.monotonic() - started
                if took > SLOW_SECONDS:  # what makes clients time out: named in the emulator's log
                    print(
                        f"slow: {target or environ.get('PATH_INFO')} took {took:.2f}s (queued {started - waited:.2f}s)",
                        flush=True,
                    )

    def answer(self, environ, start_response, target: str) -> list[bytes]:
        # Materialised here, inside the service's lock: moto does its work while iterating.
        if target.startswith(TARGET):
            return self.kinesis(environ, start_response, target[len(TARGET) :])
        if target.startswith(DYNAMODB):
            return self.dynamodb(environ, start_response, target[len(DYNAMODB) :])
        if target.startswith("AmazonSQS.SendMessage"):
            self._meter_sqs(environ, target.split(".", 1)[1])
        return list(self.app(environ, start_response))

    # -- the meter -------------------------------------------------------------------------------
    def dynamodb(self, environ, start_response, operation: str):
        """Answer a DynamoDB call and count what it would bill: item sizes before and after."""
        request = body_json(_read_body(environ))
        tables = DynamoTables(self._dynamodb_backend(environ))
        if operation == "DeleteTable" and not tables.exists(tables_named(request)):
            # AWS names the table, and the Terraform provider reads that answer as "already
            # gone"; moto's bare "Requested resource not found" failed a destroy whose retried
            # DeleteTable found its own first call done (integration-test/test_emulator_errors.py).
            return _error(
                start_response,
                400,
                "ResourceNotFoundException",
                f"Requested resource not found: Table: {tables_named(request)} not found",
            )
        try:
            before = dynamodb_before(tables, operation, request)
        except Exception:  # a request moto will refuse anyway: counted as one request
            before = {}
        captured: list = []

        def capture(status, headers, exc_info=None):
            captured.append(status)
            return start_response(status, headers, exc_info)

        answer = list(self.app(environ, capture))
        try:
            response = json.loads(b"".join(answer) or b"{}")
            units = dynamodb_units(tables, operation, request, before, response if isinstance(response, dict) else {})
        except Exception:
            units = {}
        table = tables_named(request)
        self.meter.add(function_of(environ.get("HTTP_USER_AGENT", "")), "dynamodb", f"{operation}:{table}", **units)
        return answer

    def _meter_kinesis(self, environ, operation: str, stream: str, request: dict) -> None:
        records = request.get("Records") if operation == "PutRecords" else [request]
        sizes = [self.limits._record_size(r) for r in records or []]
        self.meter.add(
            function_of(environ.get("HTTP_USER_AGENT", "")),
            "kinesis",
            f"{operation}:{stream}",
            put_payload_units=sum(put_payload_units(n) for n in sizes),
            records=len(sizes),
            ingest_kb=sum(on_demand_kb(n) for n in sizes),
            firehose_bytes=sum(firehose_billed_bytes(n) for n in sizes),
        )

    def _meter_sqs(self, environ, operation: str) -> None:
        request = body_json(_read_body(environ))
        entries = request.get("Entries") or [request]
        payload = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
        queue = str(request.get("QueueUrl", "")).rsplit("/", 1)[-1]
        self.meter.add(
            function_of(environ.get("HTTP_USER_AGENT", "")),
            "sqs",
            f"{operation}:{queue}",
            sqs_requests=sqs_requests(payload),
        )

    @staticmethod
    def _dynamodb_backend(environ):
        from moto.dynamodb.models import dynamodb_backends
        from moto.iam.models import get_account_id_from

        key, region = _credential(environ)
        return dynamodb_backends[get_account_id_from(key)][region]

    # -- Kinesis, with AWS's limits ------------------------------------------------------------
    def kinesis(self, environ, start_response, operation: str):
        request = body_json(_read_body(environ))
        stream = request.get("StreamName") or str(request.get("StreamARN") or "").rsplit("/", 1)[-1]
        try:
            if operation == "CreateStream":
                self.limits.stream_created(request)
            elif operation == "UpdateMaxRecordSize":
                if self._stream(environ, stream) is None:
                    return _error(start_response, 400, "ResourceNotFoundException", f"Stream {stream} not found")
                self.limits.update_max_record_size(stream, request.get("MaxRecordSizeInKiB"))
                return _json(start_response, {})
            elif operation == "PutRecord":
                self.limits.put_record(stream, request, lambda record: self._shard_of(environ, stream, record))
                self._meter_kinesis(environ, operation, stream, request)
            elif operation == "PutRecords":
                verdict = self.limits.put_records(stream, request, lambda r: self._shard_of(environ, stream, r))
                failed = {**verdict.failed, **self.faults.throttled_entries(request)}
                stored = [r for i, r in enumerate(request.get("Records") or []) if i not in failed]
                self._meter_kinesis(environ, operation, stream, {"Records": stored})
                if failed:
                    return put_records_failing(self.app, environ, start_response, request, failed)
            elif operation == "GetRecords":
                parts = shard_iterator_parts(str(request.get("ShardIterator") or ""))
                if parts is not None:
                    self.limits.get_records(*parts)
        except Refused as refused:
            return _error(start_response, refused.status, refused.code, refused.message)
        if operation == "DescribeStreamSummary":
            return _with_max_record_size(
                self.app, environ, start_response, self.limits.max_record_bytes(stream) // 1024
            )
        answer = list(self.app(environ, start_response))
        if operation == "DeleteStream":
            with self.limits.lock:
                self.limits.forget(stream)
        return answer

    @staticmethod
    def _stream(environ, name: str):
        from moto.iam.models import get_account_id_from
        from moto.kinesis.models import kinesis_backends

        key, region = _credential(environ)
        try:
            return kinesis_backends[get_account_id_from(key)][region].streams.get(name)
        except Exception:
            return None

    def _shard_of(self, environ, stream_name: str, record: dict) -> str | None:
        stream = self._stream(environ, stream_name)
        if stream is None:
            return None  # moto answers ResourceNotFoundException itself
        try:
            shard = stream.get_shard_for_key(record.get("PartitionKey"), record.get("ExplicitHashKey"))
        except Exception:
            return None  # a bad key: moto refuses it itself
        return shard.shard_id if shard is not None else None


class FaultInjector:
    """Faults on request, for fault-injection runs (rides.local.chaos): what AWS does to a
    consumer on a bad day, answered the way the real services answer.

    POST /_rides/faults with a JSON object sets them (an empty object clears them); GET reads
    them back with how many requests each has hit:
    - "throttle_entries": {"stream": name, "fraction": f}: PutRecords to that stream fails
      that fraction of its entries with ProvisionedThroughputExceededException (the rest
      are stored, as Kinesis does);
    - "missing_streams": [name, ...]: PutRecord(s) to them answer ResourceNotFoundException;
    - "unreachable_queues": [name, ...]: sends to those SQS queues answer 503;
    - "dynamodb_throttle": f: that fraction of DynamoDB calls answer
      ProvisionedThroughputExceededException;
    - "lose_answers": {target: n, ...}: the next n calls of that X-Amz-Target
      (DynamoDB_20120810.DeleteTable) are carried out and answered 500 InternalServerError,
      as when AWS did the work and the answer never came back: the SDK sends them again.
    """

    def __init__(self, seed: int = 7):
        import random

        self.plan: dict = {}
        self.hits: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def admin(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            plan = json.loads(environ["wsgi.input"].read(length) or b"{}")
            with self.lock:
                self.plan = plan
        with self.lock:
            body = json.dumps({"plan": self.plan, "hits": self.hits}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _hit(self, name: str) -> None:
        with self.lock:
            self.hits[name] = self.hits.get(name, 0) + 1

    def _body(self, environ) -> bytes:
        return _read_body(environ)

    def intercept(self, environ, start_response):
        """An error answer for a faulted request, or None to let moto answer it."""
        if not self.plan:
            return None
        target = environ.get("HTTP_X_AMZ_TARGET") or ""
        if target.startswith("Kinesis_20131202.PutRecord") and self.plan.get("missing_streams"):
            stream = json.loads(self._body(environ) or b"{}").get("StreamName")
            if stream in self.plan["missing_streams"]:
                self._hit(f"missing_stream:{stream}")
                return _error(start_response, 400, "ResourceNotFoundException", f"Stream {stream} not found")
        if target.startswith("AmazonSQS.SendMessage") and self.plan.get("unreachable_queues"):
            queue = json.loads(self._body(environ) or b"{}").get("QueueUrl", "").rsplit("/", 1)[-1]
            if queue in self.plan["unreachable_queues"]:
                self._hit(f"unreachable_queue:{queue}")
                return _error(start_response, 503, "ServiceUnavailable", "queue unreachable (injected)")
        fraction = self.plan.get("dynamodb_throttle") or 0
        if target.startswith("DynamoDB_20120810.") and fraction and self.rng.random() < fraction:
            self._hit("dynamodb_throttle")
            return _error(start_response, 400, "ProvisionedThroughputExceededException", "throttled (injected)")
        return None

    def loses_answer(self, target: str) -> bool:
        """Whether this call's answer is to be lost (and one fewer left to lose)."""
        if not self.plan:  # every request asks: no lock without a plan
            return False
        with self.lock:
            left = self.plan.get("lose_answers") or {}
            if left.get(target, 0) <= 0:
                return False
            left[target] -= 1
        self._hit(f"lost_answer:{target}")
        return True

    def throttled_entries(self, request: dict) -> dict[int, tuple[str, str]]:
        """The PutRecords entries this plan fails: index → (error code, message)."""
        plan = self.plan.get("throttle_entries")
        records = request.get("Records") or []
        if not plan or request.get("StreamName") != plan.get("stream") or not records:
            return {}
        failed = {
            i: ("ProvisionedThroughputExceededException", "Rate exceeded")
            for i in range(len(records))
            if self.rng.random() < float(plan.get("fraction", 0))
        }
        self._hit("throttled_entries")
        with self.lock:
            self.hits["throttled_entry_count"] = self.hits.get("throttled_entry_count", 0) + len(failed)
        return failed


def _credential(environ) -> tuple[str, str]:
    """(access key, region) of a request's SigV4 signature:
    "AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request, ..."."""
    credential = (environ.get("HTTP_AUTHORIZATION") or "").partition("Credential=")[2].split(",")[0].split("/")
    return (credential[0], credential[2]) if len(credential) > 2 else ("", "us-east-1")


def _read_body(environ) -> bytes:
    """Read the request body and put it back for moto."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def put_records_failing(app, environ, start_response, request: dict, failed: dict[int, tuple[str, str]]):
    """Store the other entries (through moto) and fail these, in one PutRecords answer, as
    Kinesis answers a call some of whose entries were throttled."""
    records = request.get("Records", [])
    kept = [r for i, r in enumerate(records) if i not in failed]
    answers: list = []
    if kept:
        body = json.dumps({**request, "Records": kept}).encode()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        captured: list = []
        answer = b"".join(app(environ, lambda status, headers, exc_info=None: captured.append(status)))
        if not captured or not captured[0].startswith("200"):
            return _error(start_response, 500, "InternalFailure", answer.decode(errors="replace")[:200])
        answers = json.loads(answer)["Records"]
    out, stored = [], iter(answers)
    for i in range(len(records)):
        if i in failed:
            code, message = failed[i]
            out.append({"ErrorCode": code, "ErrorMessage": message})
        else:
            out.append(next(stored))
    return _json(start_response, {"FailedRecordCount": len(failed), "Records": out})


def _with_max_record_size(app, environ, start_response, kib: int) -> list[bytes]:
    """DescribeStreamSummary as AWS answers it now: with the stream's MaxRecordSizeInKiB."""
    captured: list = []
    answer = b"".join(app(environ, lambda status, headers, exc_info=None: captured.append((status, headers))))
    status, headers = captured[0]
    try:
        body = json.loads(answer)
        body["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] = kib
        answer = json.dumps(body).encode()
    except (ValueError, KeyError, TypeError):
        pass  # an error answer: as moto gave it
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(answer)))]
    start_response(status, headers)
    return [answer]


def _json(start_response, obj, status: str = "200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
    return [body]


def _error(start_response, status: int, code: str, message: str):
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    return _json(start_response, {"__type": code, "message": message}, f"{status} {reason}")


def make_app(*, aws_limits: bool = True):
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return SerializingMiddleware(DomainDispatcherApplication(create_backend_app), aws_limits=aws_limits)


def _watch(parent_pid: int | None, max_lifetime: float | None, stop) -> None:
    """Stop by ourselves when the parent is gone or the lifetime is over."""
    started = time.monotonic()
    while True:
        time.sleep(0.5)
        if parent_pid and not alive(parent_pid):
            stop()
            return
        if max_lifetime and time.monotonic() - started > max_lifetime:
            stop()
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--max-lifetime", type=float, default=None)
    parser.add_argument(
        "--no-aws-limits",
        dest="aws_limits",
        action="store_false",
        default=os.environ.get("RIDES_AWS_LIMITS", "on").lower() not in ("off", "0", "false", "no"),
        help="Do not enforce Kinesis's record size, request size and per-shard rates (RIDES_AWS_LIMITS=off).",
    )
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    copy_each_table_once()

    os.environ.setdefault("MOTO_PORT", str(args.port))
    server = make_server(
        args.host, args.port, make_app(aws_limits=args.aws_limits), threaded=True, request_handler=MotoRequestHandler
    )
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid or args.max_lifetime:
        threading.Thread(target=_watch, args=(args.parent_pid, args.max_lifetime, stop), daemon=True).start()
    print(f"moto emulator listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
