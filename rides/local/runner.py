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
  the records of one ride stay in order;
- no event is larger than Lambda's 6 MB invocation payload: a batch is cut short to fit;
- `ParallelizationFactor` N: a shard's records are split by their partition key's hash into N
  lanes, each its own sequence of batches (retries, bisecting), up to N invocations of one
  shard at once, in order per partition key; the shard's checkpoint moves only past records
  that every lane has finished;
- a shard is read once a second once the runner has caught up with it (Lambda's base rate;
  every reader of a shard shares AWS's 5 GetRecords a second), and again at once while it is
  behind (MillisBehindLatest > 0, or a read that came back full).

Shards take turns; the lanes of one shard run at once, like one Lambda container each.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from rides.local.checkpoints import CheckpointStore, checkpoint_file
from rides.local.lambda_service import LambdaContext, on_failure_message
from rides.local.shards import Lane, Outcome, RunnerStats, ShardState, lane_of
from rides.settings import EventSourceSettings
from rides.stream.aws import list_shards
from rides.stream.lambda_event import kinesis_event_record
from rides.stream.retry import error_code

log = logging.getLogger("rides.runner")


# Lambda's synchronous invocation payload: an event source mapping never builds a bigger event.
MAX_EVENT_BYTES = 6 * 1024 * 1024
# A shard with nothing new is read again after this long (Lambda's base polling rate).
IDLE_READ_INTERVAL_S = 1.0


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
        read_interval_s: float = IDLE_READ_INTERVAL_S,
    ):
        self.stream_name = stream_name
        self.handler = handler
        self.settings = settings or EventSourceSettings()
        self.function_name = function_name
        self.function_timeout_s = function_timeout_s
        self.on_failure_queue_url = on_failure_queue_url
        # Few retries inside botocore: a throttled read is retried by the runner's own backoff
        # for that shard, instead of botocore's sleeping holding up every other shard.
        self.kinesis = kinesis or boto3.client(
            "kinesis", config=Config(retries={"mode": "standard", "max_attempts": 2})
        )
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
        self.read_interval_s = read_interval_s
        self._record_overhead: int | None = None
        self.on_poll = on_poll
        self.shards: dict[str, ShardState] = {}
        self.stats = RunnerStats()
        self._stop = False

    # -- shards ---------------------------------------------------------------------------
    def _iterator(self, shard: ShardState) -> str:
        """From the last record this runner holds or finished, else the starting position."""
        position = shard.last_read or self.checkpoints.get(shard.shard_id)
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
            shards = list_shards(self.kinesis, self.stream_name)
        except (ClientError, BotoCoreError) as exc:
            log.warning("cannot list the shards of %s (%s); trying again", self.stream_name, error_code(exc))
            return
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self.shards:
                continue
            parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
            lanes = [Lane(i) for i in range(self.settings.parallelization_factor)]
            self.shards[shard_id] = ShardState(shard_id, parents, lanes=lanes)
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
        full = self.settings.batch_size * len(shard.lanes)
        if shard.closed or shard.buffered >= full or time.monotonic() < shard.retry_at:
            return
        if not self._parents_finished(shard):
            return
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            limit = min(10_000, self.settings.batch_size * 2)
            response = self.kinesis.get_records(ShardIterator=shard.iterator, Limit=limit)
        except (ClientError, BotoCoreError) as exc:
            self._read_failed(shard, exc)
            return
        shard.read_errors = 0
        shard.iterator = response.get("NextShardIterator")
        shard.millis_behind = response.get("MillisBehindLatest", 0)
        if shard.iterator is None:
            shard.closed = True
        records = response["Records"]
        if not shard.millis_behind and len(records) < limit:
            # Caught up: the next read in a second (Lambda's base rate), not at once; every
            # reader of a shard shares its 5 reads a second. Behind (or a full read): at once.
            shard.retry_at = time.monotonic() + self.read_interval_s
        if not records:
            return
        shard.last_read = records[-1]["SequenceNumber"]
        now = time.monotonic()
        lanes = shard.lanes
        for record in records:
            lane = lanes[0] if len(lanes) == 1 else lanes[lane_of(record["PartitionKey"], len(lanes))]
            if not lane.buffer:
                lane.first_buffered = now
            lane.buffer.append(record)
            entry = [record["SequenceNumber"], False]
            shard.pending.append(entry)
            shard.finished_at[entry[0]] = entry

    def _read_failed(self, shard: ShardState, exc: Exception) -> None:
        """Like the event source mapping: a failed read is retried, with backoff, for ever."""
        code = error_code(exc)
        self.stats.read_errors += 1
        shard.read_errors += 1
        shard.iterator = None  # made again from the last position (an expired one must be)
        delay = min(5.0, 0.1 * 2 ** min(shard.read_errors, 6))
        shard.retry_at = time.monotonic() + delay
        log.warning("GetRecords on %s/%s failed (%s); again in %.1fs", self.stream_name, shard.shard_id, code, delay)

    def _ready(self, shard: ShardState, lane: Lane) -> bool:
        if not lane.buffer:
            return False
        if len(lane.buffer) >= (lane.limit or self.settings.batch_size) or shard.closed:
            return True
        return time.monotonic() - (lane.first_buffered or 0) >= self.settings.maximum_batching_window_in_seconds

    # -- invoking ---------------------------------------------------------------------------
    def _event(self, shard: ShardState, batch: list[dict]) -> dict:
        return {"Records": [kinesis_event_record(r, shard.shard_id, self.stream_arn, self.region) for r in batch]}

    def _call(self, event: dict, thread_name: str) -> dict:
        """Invoke the handler as Lambda would: → {"response"}, {"error"} or {"timeout"}."""
        context = LambdaContext(self.function_name, self.function_timeout_s, self.region)
        done: dict = {}

        def call() -> None:
            try:
                done["response"] = self.handler(event, context)
            except BaseException as exc:  # whatever ends the function is its error
                done["error"] = exc

        # The handler runs in a thread we can stop waiting for: past the function's timeout
        # Lambda ends the invocation as an error, and so do we (the thread is abandoned, as
        # Lambda abandons the container; what it still publishes is an identifiable duplicate).
        worker = threading.Thread(target=call, name=thread_name, daemon=True)
        started = time.perf_counter()
        worker.start()
        worker.join(self.function_timeout_s)
        # What Lambda bills: the invocation's duration (up to the timeout).
        seconds = min(time.perf_counter() - started, self.function_timeout_s)
        return {"timeout": True, "seconds": seconds} if worker.is_alive() else {**done, "seconds": seconds}

    def _invoke(self, shard: ShardState, batch: list[dict]) -> tuple[Outcome, int]:
        """→ (outcome, how many leading records are done)."""
        return self._judge(
            shard, batch, self._call(self._event(shard, batch), f"{self.function_name}-{shard.shard_id}")
        )

    def _judge(self, shard: ShardState, batch: list[dict], done: dict) -> tuple[Outcome, int]:
        self.stats.invocations += 1
        self.stats.invoked_seconds += done.get("seconds", 0.0)
        self.stats.records_in += len(batch)
        if done.get("timeout"):
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

    def _discard(self, shard: ShardState, lane: Lane, records: list[dict], condition: str) -> bool:
        """Send batch info to the on-failure destination; True when the records may be skipped."""
        self.stats.discarded += len(records)
        if not self.on_failure_queue_url:
            log.error(
                "discarding %d records of %s (%s); no on-failure destination", len(records), shard.shard_id, condition
            )
            return True
        body = on_failure_message(
            records, shard.shard_id, self.stream_arn, condition, lane.attempts + 1, self.function_name, self.region
        )
        try:
            self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(body))
        except Exception:
            log.exception("on-failure destination unreachable; keeping the records")
            self.stats.discarded -= len(records)
            return False
        return True

    def _advance(self, shard: ShardState, lane: Lane, n: int, *, done: bool = True) -> None:
        """The first n records of the lane are finished (processed or discarded): move the
        shard's checkpoint past every record that is finished in all lanes."""
        if n <= 0:
            return
        for record in lane.buffer[:n]:
            entry = shard.finished_at.pop(record["SequenceNumber"], None)
            if entry is not None:
                entry[1] = True
        if done:
            self.stats.records_done += n
        del lane.buffer[:n]
        lane.first_buffered = time.monotonic() if lane.buffer else None
        last = None
        while shard.pending and shard.pending[0][1]:
            last = shard.pending.popleft()[0]
        if last is not None:
            self.checkpoints.set(shard.shard_id, last)

    def _expire(self, shard: ShardState, lane: Lane) -> None:
        max_age = self.settings.maximum_record_age_in_seconds
        if max_age < 0 or not lane.buffer:
            return
        now = time.time()
        expired = 0
        for record in lane.buffer:
            arrival = record["ApproximateArrivalTimestamp"]
            arrival = arrival.timestamp() if isinstance(arrival, datetime) else float(arrival)
            if now - arrival <= max_age:
                break
            expired += 1
        if expired and self._discard(shard, lane, lane.buffer[:expired], "RecordAgeExceeded"):
            self._advance(shard, lane, expired, done=False)

    def _batch(self, shard: ShardState, lane: Lane) -> list[dict]:
        """The lane's next batch: its size (or the bisected size), cut to fit Lambda's payload."""
        size = min(len(lane.buffer), lane.limit or self.settings.batch_size)
        total = len('{"Records": []}')
        for i, record in enumerate(lane.buffer[:size]):
            total += self._event_record_size(shard, record) + 2
            if total > MAX_EVENT_BYTES:
                self.stats.payload_cuts += 1
                return lane.buffer[: max(1, i)]
        return lane.buffer[:size]

    def _event_record_size(self, shard: ShardState, record: dict) -> int:
        if self._record_overhead is None:
            empty = {"PartitionKey": "", "SequenceNumber": "", "Data": b"", "ApproximateArrivalTimestamp": 0.0}
            self._record_overhead = len(
                json.dumps(kinesis_event_record(empty, shard.shard_id, self.stream_arn, self.region))
            )
        data = len(record["Data"])
        return (
            self._record_overhead
            + 4 * ((data + 2) // 3)
            + len(json.dumps(record["PartitionKey"]))
            + 2 * len(record["SequenceNumber"])
            + 24  # the arrival timestamp's digits
        )

    def process_shard(self, shard: ShardState) -> bool:
        """Run the next batch of every lane that has one ready (at once); True if something
        happened."""
        work = []
        for lane in shard.lanes:
            self._expire(shard, lane)
            if self._ready(shard, lane):
                work.append((lane, self._batch(shard, lane)))
        if not work:
            return False
        if len(work) == 1:
            lane, batch = work[0]
            outcomes = [self._invoke(shard, batch)]
        else:
            events = [self._event(shard, batch) for _, batch in work]
            names = [f"{self.function_name}-{shard.shard_id}-{lane.index}" for lane, _ in work]
            with ThreadPoolExecutor(len(work)) as pool:
                results = list(pool.map(self._call, events, names))
            outcomes = [self._judge(shard, batch, done) for (_, batch), done in zip(work, results, strict=True)]
        for (lane, batch), (outcome, done) in zip(work, outcomes, strict=True):
            self._settle(shard, lane, len(batch), outcome, done)
        return True

    def _settle(self, shard: ShardState, lane: Lane, size: int, outcome: Outcome, done: int) -> None:
        self._advance(shard, lane, done)
        lane.split_left = max(0, lane.split_left - done)
        if outcome is Outcome.OK:
            lane.attempts = 0
            if not lane.split_left:
                lane.limit = None
            return
        if outcome is Outcome.ERROR and self.settings.bisect_batch_on_function_error and size > 1:
            # Retry each half separately; splitting does not use up a retry.
            lane.split_left = lane.split_left or size
            lane.limit = max(1, size // 2)
            return
        lane.attempts += 1
        retries = self.settings.maximum_retry_attempts
        if retries != -1 and lane.attempts > retries:
            remaining = size - done
            if self._discard(shard, lane, lane.buffer[:remaining], "RetryAttemptsExhausted"):
                self._advance(shard, lane, remaining, done=False)
                lane.attempts = 0
                lane.split_left = max(0, lane.split_left - remaining)
                if not lane.split_left:
                    lane.limit = None

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
        """One round: apply promotions (or sweep), poll and invoke each shard once; True if busy."""
        if self.on_poll:
            try:
                self.on_poll()
            except Exception as exc:  # that call failed, as a scheduled invocation can; the mapping goes on
                log.warning(
                    "%s: %s between batches failed: %s: %s",
                    self.function_name,
                    getattr(self.on_poll, "__name__", "on_poll"),
                    type(exc).__name__,
                    exc,
                )
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
