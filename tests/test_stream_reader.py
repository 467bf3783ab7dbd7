"""The stream reader an operator's commands and the smoke test use: a shard's read refused for
its rate is read again from the same place, nothing skipped."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from rides.operate import stream_reader
from rides.operate.stream_reader import StreamReader


def test_a_throttled_read_is_made_again_from_the_same_place(aws, monkeypatch):
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="s", ShardCount=1)
    for i in range(3):
        kinesis.put_record(StreamName="s", PartitionKey=str(i), Data=f"r{i}".encode())
    monkeypatch.setattr(stream_reader, "THROTTLED_PAUSE_S", 0.0)
    real, refused = kinesis.get_records, []

    def once_throttled(**kwargs):
        if not refused:
            refused.append(kwargs["ShardIterator"])
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}}, "GetRecords"
            )
        return real(**kwargs)

    kinesis.get_records = once_throttled
    reader = StreamReader(kinesis, "s")
    assert reader.poll() == [] and reader.throttled == 1
    assert [r["Data"] for r in reader.read_all(3, timeout=5)] == [b"r0", b"r1", b"r2"]


def test_other_errors_are_not_swallowed(aws):
    kinesis = boto3.client("kinesis")
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        StreamReader(kinesis, "no-such-stream").poll()
