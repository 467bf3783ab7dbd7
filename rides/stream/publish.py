"""PutRecords in chunks (≤ 500 records, ≤ 5 MiB) with retry of the failed entries only.

Per-key order: PutRecords does not promise order inside one call, and a retry of a failed
entry would land after entries that followed it. So each wave sends at most one record per
partition key; a key's next record goes out only once the previous one is stored. With
unique ride ids (the usual case) everything goes in the first wave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rides.stream.retry import Backoff, error_code, is_retryable

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024


@dataclass
class PublishResult:
    sent: int = 0
    failed: list[int] = field(default_factory=list)  # indices into the input, in order
    retries: int = 0  # entries sent again after a failure
    errors: dict[str, int] = field(default_factory=dict)  # error code → count

    def count(self, code: str, n: int = 1) -> None:
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
    def __init__(self, client, stream_name: str, *, concurrency: int = 4, backoff: Callable[..., Backoff] = Backoff):
        self.client = client
        self.stream_name = stream_name
        self.concurrency = max(1, concurrency)
        self.backoff = backoff

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

        Every index ends up either sent or in `result.failed`.
        """
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
                    result.count("DeadlinePassed", len(wave))
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
