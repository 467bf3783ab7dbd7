"""PutRecords in chunks (≤ 500 records, ≤ 5 MiB) with retry of the failed entries only.

Per-key order: PutRecords does not promise order inside one call, and a retry of a failed
entry would land after entries that followed it. So each wave sends at most one record per
partition key; a key's next record goes out only once the previous one is stored. With
unique ride ids (the usual case) everything goes in the first wave.

Aggregated (`aggregate=True`): the records are packed in the Kinesis Producer Library's format
(rides.stream.kpl), grouped by the shard each one's own partition key hashes to (ListShards,
kept a minute per stream), so each lands where it would alone; a shard's aggregates share one
partition key, so they too go out in order. Kinesis then takes a shard's 1,000 records a second
as ~5,000 rides, bills a PUT payload unit per 25 KB instead of one per record, and Firehose
bills its 5 KB minimum per aggregate instead of per record. Readers deaggregate
(rides.stream.kinesis_batch). A failed aggregate fails every record in it.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rides.stream.aws import list_shards
from rides.stream.failures import Failure
from rides.stream.retry import Backoff, error_code, is_retryable

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024
AGGREGATE_BYTES = 51_200  # the KPL's default AggregationMaxSize
SHARD_MAP_SECONDS = 60.0


class ShardMap:
    """Which open shard a partition key hashes to (the MD5 of the key, as a 128-bit number,
    falls in one shard's hash key range), read with ListShards and kept `refresh_seconds`."""

    def __init__(self, kinesis, stream_name: str, refresh_seconds: float = SHARD_MAP_SECONDS):
        self.kinesis, self.stream_name, self.refresh_seconds = kinesis, stream_name, refresh_seconds
        self._starts: list[int] = []
        self._shards: list[str] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        shards = list_shards(self.kinesis, self.stream_name)
        open_shards = sorted(
            (int(s["HashKeyRange"]["StartingHashKey"]), s["ShardId"])
            for s in shards
            if not s.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
        )
        self._starts = [start for start, _ in open_shards]
        self._shards = [shard for _, shard in open_shards]
        self._read_at = time.monotonic()

    def shard_of(self, partition_key: str) -> str:
        with self._lock:
            if time.monotonic() - self._read_at > self.refresh_seconds or not self._shards:
                self._refresh()
        point = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
        return self._shards[max(0, bisect.bisect_right(self._starts, point) - 1)]


# One map per stream and client for the container's life: a publisher is made per invocation.
_shard_maps: dict[tuple[int, str], ShardMap] = {}


def shard_map(kinesis, stream_name: str) -> ShardMap:
    key = (id(kinesis), stream_name)
    found = _shard_maps.get(key)
    if found is None or found.kinesis is not kinesis:
        found = _shard_maps[key] = ShardMap(kinesis, stream_name)
    return found


@dataclass
class PublishResult:
    sent: int = 0
    failed: list[int] = field(default_factory=list)  # indices into the input, in order
    retries: int = 0  # entries sent again after a failure
    errors: dict[str, int] = field(default_factory=dict)  # error code → count
    kinesis_records: int = 0  # Kinesis records the sent ones took (fewer when aggregated)

    def count(self, code: str, n: int = 1) -> None:
        code = str(code)  # plain text: a Failure member as a key breaks orjson
        self.errors[code] = self.errors.get(code, 0) + n


def chunk(indices: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Split into PutRecords-sized calls: ≤ 500 entries and ≤ 5 MiB each."""
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for i in indices:
        if current and (len(current) == MAX_RECORDS_PER_CALL or current_bytes + sizes[i] > MAX_BYTES_PER_CALL):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += sizes[i]
    if current:
        chunks.append(current)
    return chunks


class KinesisPublisher:
    def __init__(
        self,
        client,
        stream_name: str,
        *,
        concurrency: int = 4,
        backoff: Callable[..., Backoff] = Backoff,
        aggregate: bool = False,
        aggregate_bytes: int = AGGREGATE_BYTES,
    ):
        self.client = client
        self.stream_name = stream_name
        self.concurrency = max(1, concurrency)
        self.backoff = backoff
        self.aggregate = aggregate
        self.aggregate_bytes = aggregate_bytes

    def _put(self, records: Sequence[tuple[str, bytes]], indices: list[int]) -> dict[int, str | None]:
        """One PutRecords call; returns index → None (stored) or error code."""
        response = self.client.put_records(
            StreamName=self.stream_name,
            Records=[{"PartitionKey": records[i][0], "Data": records[i][1]} for i in indices],
        )
        return {i: entry.get("ErrorCode") for i, entry in zip(indices, response["Records"], strict=True)}

    def publish(
        self, records: Sequence[tuple[str, bytes]], time_left: Callable[[], float] | None = None
    ) -> PublishResult:
        """Publish (partition key, data) pairs; never drops one silently.

        Every index ends up either sent or in `result.failed` (`sent` counts records, and
        `kinesis_records` what they took).
        """
        if self.aggregate and records:
            return self._publish_aggregated(records, time_left)
        result = self._publish(records, time_left)
        result.kinesis_records = result.sent
        return result

    def _publish_aggregated(self, records: Sequence[tuple[str, bytes]], time_left) -> PublishResult:
        from rides.stream.kpl import pack

        shards = shard_map(self.client, self.stream_name)
        by_shard: dict[str, list[int]] = {}
        try:
            for i, (key, _) in enumerate(records):
                by_shard.setdefault(shards.shard_of(key), []).append(i)
        except Exception as exc:  # no shard map (a missing stream, ListShards refused): nothing sent
            result = PublishResult(failed=list(range(len(records))))
            result.count(error_code(exc), len(records))
            return result
        outer: list[tuple[str, bytes]] = []
        members: list[list[int]] = []
        for indices in by_shard.values():
            group = [records[i] for i in indices]
            shard_key = group[0][0]  # one key per shard: its aggregates go out in order
            for _, data, held in pack(group, self.aggregate_bytes):
                outer.append((shard_key, data))
                members.append([indices[j] for j in held])
        sent = self._publish(outer, time_left)
        result = PublishResult(retries=sent.retries, errors=sent.errors, kinesis_records=sent.sent)
        result.failed = sorted(i for o in sent.failed for i in members[o])
        result.sent = len(records) - len(result.failed)
        return result

    def _publish(self, records: Sequence[tuple[str, bytes]], time_left) -> PublishResult:
        result = PublishResult()
        sizes = [len(data) + len(key.encode()) for key, data in records]
        # The wave to send (the oldest unsent record of each key) and, only for keys that
        # occur more than once, the records waiting behind it: no container per unique key,
        # which for 10,000 rides would cost megabytes.
        wave: list[int] = []
        waiting: dict[str, deque[int]] = {}
        seen: set[str] = set()
        for i, (key, _) in enumerate(records):
            if sizes[i] > MAX_BYTES_PER_RECORD:
                result.failed.append(i)
                result.count("RecordTooLarge")
            elif key not in seen:
                seen.add(key)
                wave.append(i)
            else:
                waiting.setdefault(key, deque()).append(i)
        del seen
        backoff = self.backoff(time_left=time_left)
        failed_before: set[int] = set()
        with ThreadPoolExecutor(self.concurrency) as pool:
            while wave:
                if time_left is not None and time_left() <= 0:
                    # No call may start that could outlast the invocation (rides.stream.aws).
                    result.failed.extend(wave)
                    result.count(Failure.DEADLINE_PASSED, len(wave))
                    break
                result.retries += sum(1 for i in wave if i in failed_before)
                outcome, fatal = self._send_wave(records, wave, sizes, pool, result)
                unsent = [i for i in wave if outcome[i] is not None]
                stored = len(wave) - len(unsent)
                result.sent += stored
                failed_before.update(unsent)
                following = []
                if waiting and stored:
                    for i in wave:
                        if outcome[i] is None and (queue := waiting.get(records[i][0])):
                            following.append(queue.popleft())
                            if not queue:
                                del waiting[records[i][0]]
                if stored:
                    backoff.attempts = 0  # the attempt budget is for failures in a row
                if unsent and (fatal or not backoff.wait()):
                    # Out of time or tries: the unsent and the records that were next in line
                    # behind a stored one go back to the caller, never silently nowhere.
                    result.failed.extend(unsent + following)
                    break
                wave = sorted(unsent + following) if following else unsent
        for queue in waiting.values():
            result.failed.extend(queue)
        result.failed.sort()
        return result

    def _send_wave(self, records, wave, sizes, pool, result) -> tuple[dict[int, str | None], bool]:
        outcome: dict[int, str | None] = {}
        fatal = False
        futures = [(part, pool.submit(self._put, records, part)) for part in chunk(wave, sizes)]
        for part, future in futures:
            try:
                got = future.result()
            except Exception as exc:
                code = error_code(exc)
                result.count(code, len(part))
                fatal = fatal or not is_retryable(exc)
                for i in part:
                    outcome[i] = code
                continue
            for i, code in got.items():
                outcome[i] = code
                if code:
                    result.count(code)
        return outcome, fatal
