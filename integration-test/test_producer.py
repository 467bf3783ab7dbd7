"""rides.producer against the emulator, with AWS's limits on: validation at the caller,
throttled entries retried until every ride is stored once and in order, KPL aggregation that
puts every ride on its own shard, and a report of what could not be sent."""

from __future__ import annotations

import hashlib
import uuid

import boto3
import orjson
import pytest

from rides.producer import InvalidRide, RideProducer
from rides.stream.kpl import MAGIC, deaggregate


@pytest.fixture
def kinesis(on_emulator):
    return boto3.client("kinesis")


def new_stream(kinesis, shards: int = 1) -> str:
    name = f"producer-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    return name


def ride(ride_id, pu=130, do=205, distance=3.66, **extra) -> dict:
    return {"ride_id": ride_id, "ride": {"PULocationID": pu, "DOLocationID": do, "trip_distance": distance, **extra}}


def read_all(kinesis, stream: str) -> dict[str, list[tuple[str, bytes]]]:
    """shard → (partition key, data) of every user record on it, aggregates opened, in order."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = []
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            records += response["Records"]
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
        users = []
        for record in records:
            if record["Data"][:4] == MAGIC:
                users += [(u.partition_key, bytes(u.data)) for u in deaggregate(record["Data"])]
            else:
                users.append((record["PartitionKey"], record["Data"]))
        out[shard["ShardId"]] = users
    return out


def test_a_bad_ride_is_the_callers_error_and_nothing_of_the_call_is_sent(kinesis):
    stream = new_stream(kinesis)
    producer = RideProducer(stream, kinesis=kinesis)
    with pytest.raises(InvalidRide) as bad:
        producer.send([ride(1), ride(2, pu=999), {"ride": {}}, ride(4, distance=float("nan"))])
    assert [index for index, _ in bad.value.problems] == [1, 2, 3]
    assert "ride.PULocationID must be a TLC zone id 1-265, got 999" in str(bad.value)
    assert sum(len(v) for v in read_all(kinesis, stream).values()) == 0


def test_five_thousand_rides_at_once_overrun_a_shard_and_every_one_is_stored_once_in_order(kinesis):
    stream = new_stream(kinesis)
    producer = RideProducer(stream, kinesis=kinesis)
    # 1,250 rides, each with four events in a row: the shard takes 1,000 records a second
    events = [ride(i % 1250, distance=float(i)) for i in range(5000)]
    report = producer.send(events)
    assert report.unsent == [] and report.sent == 5000
    assert report.errors.get("ProvisionedThroughputExceededException", 0) > 0  # it was throttled
    assert report.retries > 0
    [stored] = read_all(kinesis, stream).values()
    assert len(stored) == 5000
    by_ride: dict[str, list[float]] = {}
    for key, data in stored:
        by_ride.setdefault(key, []).append(orjson.loads(data)["ride"]["trip_distance"])
    assert all(distances == sorted(distances) for distances in by_ride.values())  # per-ride order
    assert sorted(d for v in by_ride.values() for d in v) == [float(i) for i in range(5000)]


def test_aggregated_rides_take_a_fraction_of_the_records_and_each_lands_on_its_own_shard(kinesis):
    stream = new_stream(kinesis, shards=4)
    producer = RideProducer(stream, kinesis=kinesis, aggregate=True)
    report = producer.send([ride(i) for i in range(3000)])
    assert report.unsent == [] and report.sent == 3000
    assert report.kinesis_records < 3000 / 50  # ~200-byte rides, 50 KiB aggregates
    assert "ProvisionedThroughputExceededException" not in report.errors  # 3,000 rides in ~15 records
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    ranges = {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    }
    seen = 0
    for shard, users in read_all(kinesis, stream).items():
        low, high = ranges[shard]
        for key, data in users:
            point = int(hashlib.md5(key.encode()).hexdigest(), 16)
            assert low <= point <= high, f"ride {key} is on {shard}, not where its own key hashes"
            assert orjson.loads(data)["ride_id"] == int(key)
            seen += 1
    assert seen == 3000


def test_a_ride_spread_over_two_aggregates_keeps_its_order(kinesis):
    stream = new_stream(kinesis)
    producer = RideProducer(stream, kinesis=kinesis, aggregate=True, aggregate_max_bytes=4096)
    events = [ride(i % 3, distance=float(i)) for i in range(600)]  # ~30 aggregates on one shard
    assert producer.send(events).unsent == []
    [stored] = read_all(kinesis, stream).values()
    for key in ("0", "1", "2"):
        distances = [orjson.loads(d)["ride"]["trip_distance"] for k, d in stored if k == key]
        assert distances == sorted(distances) and len(distances) == 200


def test_what_cannot_be_sent_is_reported_not_dropped(kinesis):
    producer = RideProducer("no-such-stream", kinesis=kinesis, retry_seconds=2)
    report = producer.send([ride(1), ride(2)])
    assert report.sent == 0
    assert [(u.index, u.ride_id, u.error) for u in report.unsent] == [
        (0, "1", "ResourceNotFoundException"),
        (1, "2", "ResourceNotFoundException"),
    ]


def test_completions_are_checked_against_their_own_contract(kinesis):
    from datetime import datetime

    from rides.stream.events import completion_json

    stream = new_stream(kinesis)
    producer = RideProducer(stream, kinesis=kinesis, contract="completion")
    good = completion_json(7, datetime(2021, 2, 3, 8, 30), duration_minutes=12.0)
    with pytest.raises(InvalidRide, match="lpep_dropoff_datetime is required"):
        producer.send([good, orjson.dumps({"type": "ride-completed", "ride_id": 8, "duration_minutes": 3})])
    assert producer.send([good]).sent == 1
