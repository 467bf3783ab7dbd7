"""Read every shard of a stream from its start (or its end), KPL aggregates opened: `rides
tail`, the deploy's smoke test, the demo's summary and the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from botocore.exceptions import ClientError

from rides.stream.kpl import expand

THROTTLED_PAUSE_S = 0.2


class StreamReader:
    def __init__(self, kinesis, stream_name: str, *, start: str = "TRIM_HORIZON"):
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.start = start
        self.iterators: dict[str, str | None] = {}
        self.throttled = 0  # reads refused for the shard's rate (and made again)

    def _discover(self) -> None:
        for page in self.kinesis.get_paginator("list_shards").paginate(StreamName=self.stream_name):
            for shard in page["Shards"]:
                if shard["ShardId"] not in self.iterators:
                    self.iterators[shard["ShardId"]] = self.kinesis.get_shard_iterator(
                        StreamName=self.stream_name, ShardId=shard["ShardId"], ShardIteratorType=self.start
                    )["ShardIterator"]

    def poll(self) -> list[dict]:
        """One GetRecords round over all shards."""
        if not self.iterators:
            self._discover()
        records: list[dict] = []
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None:
                continue
            try:
                response = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ProvisionedThroughputExceededException":
                    raise
                # a shard's 5 reads a second are shared with its other readers: this one waits
                # and reads from the same place next round
                self.throttled += 1
                time.sleep(THROTTLED_PAUSE_S)
                continue
            self.iterators[shard_id] = response.get("NextShardIterator")
            for record in response["Records"]:
                record["ShardId"] = shard_id
            records.extend(expand(response["Records"]))  # KPL aggregates: their rides, one by one
        return records

    def follow(self, *, until: Callable[[], bool] | None = None, idle_s: float = 0.2) -> Iterator[dict]:
        while not (until and until()):
            records = self.poll()
            yield from records
            if not records:
                time.sleep(idle_s)

    def read_all(self, expected: int, timeout: float = 60.0) -> list[dict]:
        """Poll until `expected` records arrived or the timeout passed."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            records = self.poll()
            got.extend(records)
            if not records:
                time.sleep(0.1)
        return got
