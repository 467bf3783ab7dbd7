"""The local event-source runner: Lambda's Kinesis event source mapping, as a process.

It polls every shard, batches by size or window, invokes the real handler in-process with
the event shape Lambda sends, and applies the same failure semantics:
- partial batch response: resume from the lowest reported sequence number (a response
  naming a record that is not in the batch fails the whole batch, as on AWS);
- function error: bisect the batch (splits do not count as retries), retry up to a maximum;
- records older than the maximum age and batches out of retries go to the on-failure
  destination (SQS) with the same `KinesisBatchInfo` message Lambda sends, and are skipped;
- per-shard checkpoints in a file, written only after a batch is done, so a restart
  resumes where it stopped (at-least-once, like Lambda); the file belongs to one stream
  (its ARN and creation time), so a stream recreated under the same name starts afresh;
- the function's timeout: an invocation that runs past it is a function error;
- a failed GetRecords is retried with backoff (an expired iterator is made again from the
  last position), never the end of the runner;
- after a reshard, a child shard is read only once its parents are read to their end, so
  the records of one ride stay in order.

Invocations run one at a time, like one Lambda container per shard with parallelization 1.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from rides.settings import EventSourceSettings
from rides.stream.retry import error_code

log = logging.getLogger("rides.runner")


class LambdaContext:
    """What the handler may ask of Lambda's context object."""

    def __init__(self, function_name: str, timeout_s: float, region: str):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local-runner"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class CheckpointStore:
    """Last processed sequence number per shard, in one JSON file per stream and consumer."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.positions: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.positions = {}

    def get(self, shard_id: str) -> str | None:
        return self.positions.get(shard_id)

    def set(self, shard_id: str, sequence_number: str) -> None:
        self.positions[shard_id] = sequence_number
        self._write()

    def forget(self, shard_id: str) -> None:
        self.positions.pop(shard_id, None)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.positions))
        tmp.replace(self.path)


def checkpoint_file(folder: Path, stream_name: str, function_name: str, stream_arn: str, created) -> Path:
    """The checkpoints of one consumer on one stream, named by the stream's identity (its ARN
    and creation time, as the event source mapping is on AWS), not only by its name: a stream
    deleted and created again (a fresh emulator) numbers its records from the start again,
    and an old position would silently skip every record up to it."""
    created = created.isoformat() if isinstance(created, datetime) else str(created or "")
    identity = hashlib.sha256(f"{stream_arn}|{created}".encode()).hexdigest()[:12]
    path = folder / f"{stream_name}.{function_name}.{identity}.json"
    stale = [p for p in folder.glob(f"{stream_name}.{function_name}.*json") if p != path and p.suffix == ".json"]
    if stale and not path.exists():
        log.warning(
            "%s was created anew (%s): the checkpoints of %d earlier stream(s) by that name are not used (%s)",
            stream_name,
            created or "creation time unknown",
            len(stale),
            ", ".join(p.name for p in stale),
        )
    return path


@dataclass
class ShardState:
    shard_id: str
    parents: tuple[str, ...] = ()
    iterator: str | None = None  # made when the shard is first read (after its parents)
    buffer: list[dict] = field(default_factory=list)
    first_buffered: float | None = None
    limit: int | None = None  # batch size while bisecting
    split_left: int = 0  # records of the failed batch not yet through after a split
    attempts: int = 0
    millis_behind: int = 0
    closed: bool = False  # read to its end (a parent after a reshard)
    read_errors: int = 0  # GetRecords failures in a row
    retry_at: float = 0.0  # no GetRecords before this (monotonic), after a failure

    @property
    def finished(self) -> bool:
        return self.closed and not self.buffer


class Outcome(enum.Enum):
    """What one invocation did with its batch."""

    OK = "ok"  # every record done
    PARTIAL = "partial"  # the records before the lowest reported one are done
    ERROR = "error"  # a function error (exception, timeout, or a malformed response): none done


@dataclass
class RunnerStats:
    invocations: int = 0
    records_in: int = 0
    records_done: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    timeouts: int = 0
    read_errors: int = 0
    discarded: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self, shards: dict[str, ShardState]) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "invocations": self.invocations,
            "records_in": self.records_in,
            "records_done": self.records_done,
            "function_errors": self.function_errors,
            "partial_failures": self.partial_failures,
            "timeouts": self.timeouts,
            "read_errors": self.read_errors,
            "discarded": self.discarded,
            "records_per_s": round(self.records_done / elapsed, 1) if elapsed else 0.0,
            "lag_ms": max((s.millis_behind for s in shards.values()), default=0),
        }


def kinesis_event_record(record: dict, shard_id: str, stream_arn: str, region: str) -> dict:
    """One record of the event Lambda sends for Kinesis."""
    arrival = record["ApproximateArrivalTimestamp"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode("ascii"),
            "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::000000000000:role/{stream_arn.rsplit('/', 1)[-1]}-consumer",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


class EventSourceRunner:
    def __init__(
        self,
        stream_name: str,
        *,
        handler: Callable,
        settings: EventSourceSettings | None = None,
        function_name: str = "ride-duration-consumer",
        function_timeout_s: float = 60.0,
        on_failure_queue_url: str | None = None,
        checkpoint_path: Path | None = None,
        kinesis=None,
        sqs=None,
        poll_interval_s: float = 0.2,
        on_poll: Callable[[], None] | None = None,
    ):
        self.stream_name = stream_name
        self.handler = handler
        self.settings = settings or EventSourceSettings()
        self.function_name = function_name
        self.function_timeout_s = function_timeout_s
        self.on_failure_queue_url = on_failure_queue_url
        self.kinesis = kinesis or boto3.client("kinesis")
        self.sqs = sqs or (boto3.client("sqs") if on_failure_queue_url else None)
        self.region = self.kinesis.meta.region_name
        description = self.kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
        self.stream_arn = description["StreamARN"]
        from rides.settings import state_dir

        self.checkpoints = CheckpointStore(
            checkpoint_path
            or checkpoint_file(
                state_dir() / "checkpoints",
                stream_name,
                function_name,
                self.stream_arn,
                description.get("StreamCreationTimestamp"),
            )
        )
        self.poll_interval_s = poll_interval_s
        self.on_poll = on_poll
        self.shards: dict[str, ShardState] = {}
        self.stats = RunnerStats()
        self._stop = False

    # -- shards ---------------------------------------------------------------------------
    def _iterator(self, shard: ShardState) -> str:
        """From the last record this runner holds or finished, else the starting position."""
        position = shard.buffer[-1]["SequenceNumber"] if shard.buffer else self.checkpoints.get(shard.shard_id)
        if position:
            kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": position}
        else:
            kwargs = {"ShardIteratorType": self.settings.starting_position}
        return self.kinesis.get_shard_iterator(StreamName=self.stream_name, ShardId=shard.shard_id, **kwargs)[
            "ShardIterator"
        ]

    def discover_shards(self) -> None:
        """Find new shards (a reshard adds children); a failure here is retried next round."""
        try:
            shards, token = [], None
            while True:
                page = self.kinesis.list_shards(**({"NextToken": token} if token else {"StreamName": self.stream_name}))
                shards += page["Shards"]
                token = page.get("NextToken")
                if not token:
                    break
        except (ClientError, BotoCoreError) as exc:
            log.warning("cannot list the shards of %s (%s); trying again", self.stream_name, error_code(exc))
            return
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self.shards:
                continue
            parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
            self.shards[shard_id] = ShardState(shard_id, parents)
            self._check_checkpoint(shard_id, shard.get("SequenceNumberRange") or {})

    def _check_checkpoint(self, shard_id: str, sequence_range: dict) -> None:
        """A stored position outside the shard's range belongs to another stream: say so loudly
        and read the shard from its start (duplicates can be told apart; a skip cannot)."""
        position = self.checkpoints.get(shard_id)
        if not position or not position.isdigit():
            return
        start, end = sequence_range.get("StartingSequenceNumber"), sequence_range.get("EndingSequenceNumber")
        if (start and int(position) < int(start)) or (end and int(position) > int(end)):
            log.error(
                "checkpoint %s of %s/%s is outside the shard's sequence numbers %s-%s: it is not this "
                "stream's; reading the shard from its start instead",
                position,
                self.stream_name,
                shard_id,
                start,
                end or "",
            )
            self.checkpoints.forget(shard_id)

    def _parents_finished(self, shard: ShardState) -> bool:
        """Per-ride order across a reshard: a child waits until every parent it knows is read
        to its end and processed (a parent past retention is no longer listed)."""
        return all(self.shards[p].finished for p in shard.parents if p in self.shards)

    # -- polling ----------------------------------------------------------------------------
    def _fill(self, shard: ShardState) -> None:
        if shard.closed or len(shard.buffer) >= self.settings.batch_size or time.monotonic() < shard.retry_at:
            return
        if not self._parents_finished(shard):
            return
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            response = self.kinesis.get_records(
                ShardIterator=shard.iterator, Limit=min(10_000, self.settings.batch_size * 2)
            )
        except (ClientError, BotoCoreError) as exc:
            self._read_failed(shard, exc)
            return
        shard.read_errors = 0
        shard.iterator = response.get("NextShardIterator")
        shard.millis_behind = response.get("MillisBehindLatest", 0)
        if shard.iterator is None:
            shard.closed = True
        if response["Records"]:
            if not shard.buffer:
                shard.first_buffered = time.monotonic()
            shard.buffer.extend(response["Records"])

    def _read_failed(self, shard: ShardState, exc: Exception) -> None:
        """Like the event source mapping: a failed read is retried, with backoff, for ever."""
        code = error_code(exc)
        self.stats.read_errors += 1
        shard.read_errors += 1
        shard.iterator = None  # made again from the last position (an expired one must be)
        delay = min(5.0, 0.1 * 2 ** min(shard.read_errors, 6))
        shard.retry_at = time.monotonic() + delay
        log.warning("GetRecords on %s/%s failed (%s); again in %.1fs", self.stream_name, shard.shard_id, code, delay)

    def _ready(self, shard: ShardState) -> bool:
        if not shard.buffer:
            return False
        if len(shard.buffer) >= (shard.limit or self.settings.batch_size) or shard.closed:
            return True
        return time.monotonic() - (shard.first_buffered or 0) >= self.settings.maximum_batching_window_in_seconds

    # -- invoking ---------------------------------------------------------------------------
    def _invoke(self, shard: ShardState, batch: list[dict]) -> tuple[Outcome, int]:
        """→ (outcome, how many leading records are done)."""
        event = {"Records": [kinesis_event_record(r, shard.shard_id, self.stream_arn, self.region) for r in batch]}
        context = LambdaContext(self.function_name, self.function_timeout_s, self.region)
        self.stats.invocations += 1
        self.stats.records_in += len(batch)
        done: dict = {}

        def call() -> None:
            try:
                done["response"] = self.handler(event, context)
            except BaseException as exc:  # whatever ends the function is its error
                done["error"] = exc

        # The handler runs in a thread we can stop waiting for: past the function's timeout
        # Lambda ends the invocation as an error, and so do we (the thread is abandoned, as
        # Lambda abandons the container; what it still publishes is an identifiable duplicate).
        worker = threading.Thread(target=call, name=f"{self.function_name}-{shard.shard_id}", daemon=True)
        worker.start()
        worker.join(self.function_timeout_s)
        if worker.is_alive():
            log.error(
                "%s timed out after %.1fs on %s (%d records): a function error",
                self.function_name,
                self.function_timeout_s,
                shard.shard_id,
                len(batch),
            )
            self.stats.timeouts += 1
            self.stats.function_errors += 1
            return Outcome.ERROR, 0
        if "error" in done:
            error = done["error"]
            log.error(
                "function error on %s (%d records)",
                shard.shard_id,
                len(batch),
                exc_info=(type(error), error, error.__traceback__),
            )
            self.stats.function_errors += 1
            return Outcome.ERROR, 0
        response = done.get("response")
        failures = (response or {}).get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return Outcome.OK, len(batch)
        positions = {r["SequenceNumber"]: i for i, r in enumerate(batch)}
        ids = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
        if any(i not in positions for i in ids):
            # Lambda treats a response naming an unknown record as a failure of the whole batch.
            log.error("batchItemFailures names records not in the batch: %s", ids)
            self.stats.function_errors += 1
            return Outcome.ERROR, 0
        self.stats.partial_failures += 1
        return Outcome.PARTIAL, min(positions[i] for i in ids)

    def _discard(self, shard: ShardState, records: list[dict], condition: str) -> bool:
        """Send batch info to the on-failure destination; True when the records may be skipped."""
        self.stats.discarded += len(records)
        if not self.on_failure_queue_url:
            log.error(
                "discarding %d records of %s (%s); no on-failure destination", len(records), shard.shard_id, condition
            )
            return True
        body = on_failure_message(
            records, shard.shard_id, self.stream_arn, condition, shard.attempts + 1, self.function_name, self.region
        )
        try:
            self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(body))
        except Exception:
            log.exception("on-failure destination unreachable; keeping the records")
            self.stats.discarded -= len(records)
            return False
        return True

    def _advance(self, shard: ShardState, n: int, *, done: bool = True) -> None:
        """Move the checkpoint past the first n buffered records (processed or discarded)."""
        if n <= 0:
            return
        self.checkpoints.set(shard.shard_id, shard.buffer[n - 1]["SequenceNumber"])
        if done:
            self.stats.records_done += n
        del shard.buffer[:n]
        shard.first_buffered = time.monotonic() if shard.buffer else None

    def _expire(self, shard: ShardState) -> None:
        max_age = self.settings.maximum_record_age_in_seconds
        if max_age < 0 or not shard.buffer:
            return
        now = time.time()
        expired = 0
        for record in shard.buffer:
            arrival = record["ApproximateArrivalTimestamp"]
            arrival = arrival.timestamp() if isinstance(arrival, datetime) else float(arrival)
            if now - arrival <= max_age:
                break
            expired += 1
        if expired and self._discard(shard, shard.buffer[:expired], "RecordAgeExceeded"):
            self._advance(shard, expired, done=False)

    def process_shard(self, shard: ShardState) -> bool:
        """Run one batch if one is ready; True if something happened."""
        self._expire(shard)
        if not self._ready(shard):
            return False
        size = min(len(shard.buffer), shard.limit or self.settings.batch_size)
        outcome, done = self._invoke(shard, shard.buffer[:size])
        self._advance(shard, done)
        shard.split_left = max(0, shard.split_left - done)
        if outcome is Outcome.OK:
            shard.attempts = 0
            if not shard.split_left:
                shard.limit = None
            return True
        if outcome is Outcome.ERROR and self.settings.bisect_batch_on_function_error and size > 1:
            # Retry each half separately; splitting does not use up a retry.
            shard.split_left = shard.split_left or size
            shard.limit = max(1, size // 2)
            return True
        shard.attempts += 1
        retries = self.settings.maximum_retry_attempts
        if retries != -1 and shard.attempts > retries:
            remaining = size - done
            if self._discard(shard, shard.buffer[:remaining], "RetryAttemptsExhausted"):
                self._advance(shard, remaining, done=False)
                shard.attempts = 0
                shard.split_left = max(0, shard.split_left - remaining)
                if not shard.split_left:
                    shard.limit = None
        return True

    # -- the loop ---------------------------------------------------------------------------
    def run_once(self) -> bool:
        busy = False
        for shard in list(self.shards.values()):
            self._fill(shard)
            busy = self.process_shard(shard) or busy
        return busy

    def stop(self) -> None:
        self._stop = True

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        report_every_s: float = 5.0,
        report: Callable[[dict], None] | None = None,
    ) -> RunnerStats:
        run_all([self], until=until, report_every_s=report_every_s, report=report)
        return self.stats

    def step(self) -> bool:
        """One round: apply promotions, poll and invoke each shard once; True if busy."""
        if self.on_poll:
            self.on_poll()
        return self.run_once()


def run_all(
    runners: list[EventSourceRunner],
    *,
    until: Callable[[], bool] | None = None,
    report_every_s: float = 5.0,
    report: Callable[[dict], None] | None = None,
) -> None:
    """Drive several runners (one per consumer) in one loop until `until()` or a stop."""
    for runner in runners:
        runner.discover_shards()
    last_report = last_discovery = time.monotonic()
    while not any(r._stop for r in runners) and not (until and until()):
        busy = False
        for runner in runners:
            busy = runner.step() or busy
        now = time.monotonic()
        if now - last_discovery > 30:
            for runner in runners:
                runner.discover_shards()
            last_discovery = now
        if report and now - last_report >= report_every_s:
            for runner in runners:
                report({"consumer": runner.function_name, **runner.stats.as_dict(runner.shards)})
            last_report = now
        if not busy:
            time.sleep(min(r.poll_interval_s for r in runners))


def on_failure_message(
    records: list[dict],
    shard_id: str,
    stream_arn: str,
    condition: str,
    invoke_count: int,
    function_name: str,
    region: str,
) -> dict:
    """The record Lambda sends to an on-failure destination for a Kinesis batch."""

    def iso(value) -> str:
        moment = value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:{region}:000000000000:function:{function_name}",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": records[0]["SequenceNumber"],
            "endSequenceNumber": records[-1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": iso(records[0]["ApproximateArrivalTimestamp"]),
            "approximateArrivalOfLastRecord": iso(records[-1]["ApproximateArrivalTimestamp"]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }
