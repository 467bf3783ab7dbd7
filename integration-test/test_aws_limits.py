"""The emulator refuses and throttles what AWS's Kinesis refuses and throttles
(rides.local.limits), so that what passes locally is what AWS accepts."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rides.local.backend import LOCAL_ENV, stop_process
from rides.local.stack import start_emulator

MIB = 1024 * 1024
# No retries in the client: the test must see what the service answered.
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def kinesis(on_emulator):
    return boto3.client("kinesis", config=NO_RETRIES)


def new_stream(kinesis, shards: int = 1, **extra) -> str:
    name = f"limits-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards, **extra)
    return name


def code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def test_a_record_over_the_streams_maximum_is_refused_and_one_at_it_is_stored(kinesis):
    stream = new_stream(kinesis)
    key = "k"
    kinesis.put_record(StreamName=stream, PartitionKey=key, Data=b"x" * (MIB - len(key)))  # data + key = 1 MiB
    time.sleep(1.1)  # the shard's byte budget refills
    with pytest.raises(ClientError) as refused:
        kinesis.put_record(StreamName=stream, PartitionKey=key, Data=b"x" * (MIB - len(key) + 1))
    assert code(refused) == "ValidationException"
    assert "less than or equal to 1048576" in str(refused.value)


def test_put_records_over_500_records_or_5_mib_is_refused_whole(kinesis):
    stream = new_stream(kinesis)
    with pytest.raises(ClientError) as too_many:
        kinesis.put_records(StreamName=stream, Records=[{"PartitionKey": "k", "Data": b"x"}] * 501)
    assert code(too_many) == "ValidationException"
    with pytest.raises(ClientError) as too_big:
        kinesis.put_records(StreamName=stream, Records=[{"PartitionKey": "k", "Data": b"x" * (MIB - 10)}] * 6)
    assert code(too_big) == "InvalidArgumentException"
    assert "Records size exceeds 5 MB limit" in str(too_big.value)


def test_the_maximum_record_size_is_the_streams_own_up_to_10_mib(kinesis):
    stream = new_stream(kinesis, MaxRecordSizeInKiB=2048)
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["MaxRecordSizeInKiB"] == 2048
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x" * (MIB + MIB // 2))
    # the SDK refuses 512 itself; a client without its checks gets the service's answer
    unchecked = boto3.client("kinesis", config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as refused:
        unchecked.update_max_record_size(StreamARN=summary["StreamARN"], MaxRecordSizeInKiB=512)
    assert code(refused) == "ValidationException"
    kinesis.update_max_record_size(StreamARN=summary["StreamARN"], MaxRecordSizeInKiB=10240)
    assert kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 10240
    assert (
        kinesis.describe_stream_summary(StreamName=new_stream(kinesis))["StreamDescriptionSummary"][
            "MaxRecordSizeInKiB"
        ]
        == 1024
    )


def test_a_shard_takes_1000_records_a_second_and_throttles_the_rest_entry_by_entry(kinesis):
    stream = new_stream(kinesis)
    started = time.monotonic()
    answers = [
        kinesis.put_records(
            StreamName=stream, Records=[{"PartitionKey": f"{call}-{i}", "Data": b"ride"} for i in range(500)]
        )
        for call in range(5)
    ]
    elapsed = time.monotonic() - started
    stored = [r for a in answers for r in a["Records"] if "SequenceNumber" in r]
    # a full second's budget, plus what refilled while the calls ran
    assert 1000 <= len(stored) <= 1000 + 1000 * elapsed + 1
    assert sum(a["FailedRecordCount"] for a in answers) == 2500 - len(stored) > 0
    codes = {r.get("ErrorCode") for a in answers for r in a["Records"] if "ErrorCode" in r}
    assert codes == {"ProvisionedThroughputExceededException"}
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    read = kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=10_000)["Records"]
    assert len(read) == len(stored)  # a throttled entry is not stored


def test_a_shard_takes_1_mib_a_second(kinesis):
    stream = new_stream(kinesis)
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x" * (900 * 1024))
    with pytest.raises(ClientError) as throttled:  # ~0.9 s of the shard's bytes are gone
        kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x" * (900 * 1024))
    assert code(throttled) == "ProvisionedThroughputExceededException"
    time.sleep(1.0)
    kinesis.put_record(StreamName=stream, PartitionKey="k", Data=b"x" * (900 * 1024))


def test_a_shard_answers_five_reads_a_second_shared_by_every_reader(kinesis):
    stream = new_stream(kinesis)
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterators = [
        kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(2)
    ]  # two consumers polling the same shard
    started, answered = time.monotonic(), 0
    for i in range(30):
        try:
            kinesis.get_records(ShardIterator=iterators[i % 2])
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
            break
        answered += 1
    else:
        pytest.fail("30 reads of one shard in a row were never throttled")
    assert 5 <= answered <= 5 + 5 * (time.monotonic() - started) + 1


def test_limits_can_be_switched_off(tmp_path):
    info, proc = start_emulator(parent_pid=os.getpid(), max_lifetime=120, log_path=tmp_path / "e.log", aws_limits=False)
    try:
        client = boto3.client("kinesis", endpoint_url=info.endpoint, config=NO_RETRIES, **_keys())
        client.create_stream(StreamName="free", ShardCount=1)
        for call in range(4):
            answer = client.put_records(
                StreamName="free", Records=[{"PartitionKey": f"{call}-{i}", "Data": b"ride"} for i in range(500)]
            )
            assert answer["FailedRecordCount"] == 0
        health = json.loads(urllib.request.urlopen(f"{info.endpoint}/_rides/health").read())
        assert health["aws_limits"] is False
    finally:
        stop_process(info.pid)
        proc.wait(timeout=15)


def _keys() -> dict:
    return {
        "aws_access_key_id": LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": LOCAL_ENV["AWS_DEFAULT_REGION"],
    }
