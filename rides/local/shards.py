"""What the local runner keeps of each shard (its lanes, what it read and has not checkpointed
yet) and counts of its invocations."""

from __future__ import annotations

import enum
import hashlib
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Lane:
    """One of a shard's concurrent batch sequences (ParallelizationFactor): the records whose
    partition keys hash to it, in shard order, with their own retry and bisect state."""

    index: int
    buffer: list[dict] = field(default_factory=list)
    first_buffered: float | None = None
    limit: int | None = None  # batch size while bisecting
    split_left: int = 0  # records of the failed batch not yet through after a split
    attempts: int = 0


@dataclass
class ShardState:
    shard_id: str
    parents: tuple[str, ...] = ()
    iterator: str | None = None  # made when the shard is first read (after its parents)
    lanes: list[Lane] = field(default_factory=lambda: [Lane(0)])
    # Every record read and not yet checkpointed, in shard order: [sequence number, finished].
    pending: deque = field(default_factory=deque)
    finished_at: dict = field(default_factory=dict)  # sequence number → its entry in `pending`
    last_read: str | None = None  # where the next read starts
    millis_behind: int = 0
    closed: bool = False  # read to its end (a parent after a reshard)
    read_errors: int = 0  # GetRecords failures in a row
    retry_at: float = 0.0  # no GetRecords before this (monotonic), after a failure or an idle read

    @property
    def buffered(self) -> int:
        return sum(len(lane.buffer) for lane in self.lanes)

    @property
    def buffer(self) -> list[dict]:
        """Every record waiting, lane by lane (read only)."""
        return [record for lane in self.lanes for record in lane.buffer]

    @property
    def finished(self) -> bool:
        return self.closed and not self.buffered


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
    payload_cuts: int = 0  # batches cut short to stay within Lambda's 6 MB payload
    invoked_seconds: float = 0.0  # the invocations' durations, what Lambda bills (GB-s with the memory)
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
            "payload_cuts": self.payload_cuts,
            "records_per_s": round(self.records_done / elapsed, 1) if elapsed else 0.0,
            "lag_ms": max((s.millis_behind for s in shards.values()), default=0),
        }


def lane_of(partition_key: str, lanes: int) -> int:
    """Lambda keeps a partition key's records in one of the shard's concurrent batches."""
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest()[:8], "big") % lanes
