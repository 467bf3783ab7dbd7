from collections import Counter

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from rides.stream.publish import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, KinesisPublisher, chunk
from rides.stream.retry import Backoff


def no_sleep_backoff(**kwargs):
    return Backoff(sleep=lambda s: None, **kwargs)


class FlakyKinesis:
    """Answers PutRecords like Kinesis under throttling: some entries fail, others land."""

    def __init__(self, fail_plan):
        self.fail_plan = fail_plan  # call number -> set of positions in that call to fail, or an exception
        self.calls = []
        self.stored = []

    def put_records(self, StreamName, Records):
        call = len(self.calls)
        self.calls.append([r["PartitionKey"] for r in Records])
        plan = self.fail_plan(call, Records)
        if isinstance(plan, Exception):
            raise plan
        out = []
        for i, record in enumerate(Records):
            if i in plan:
                out.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                self.stored.append((record["PartitionKey"], record["Data"]))
                out.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-0"})
        return {"FailedRecordCount": len(plan), "Records": out}


def records(n, keys=None):
    return [((keys or (lambda i: str(i)))(i), f"data-{i}".encode()) for i in range(n)]


def test_chunks_respect_count_and_size_limits():
    sizes = [1024] * 1200
    chunks = chunk(range(1200), sizes)
    assert [len(c) for c in chunks] == [MAX_RECORDS_PER_CALL, MAX_RECORDS_PER_CALL, 200]
    big = [1024 * 1024] * 12
    assert all(sum(big[i] for i in c) <= MAX_BYTES_PER_CALL for c in chunk(range(12), big))
    assert sum(len(c) for c in chunk(range(12), big)) == 12


def test_throttled_entries_are_retried_nothing_lost_nothing_duplicated():
    client = FlakyKinesis(lambda call, recs: set(range(0, len(recs), 3)) if call < 3 else set())
    result = KinesisPublisher(client, "s", concurrency=1, backoff=no_sleep_backoff).publish(records(1200))
    assert result.failed == []
    assert result.sent == 1200
    assert result.retries > 0
    assert Counter(k for k, _ in client.stored) == Counter(str(i) for i in range(1200))


def test_order_is_kept_per_partition_key_across_retries():
    # 3 rides, 20 updates each; the first record of every call fails once.
    failed_once = set()

    def plan(call, recs):
        first = recs[0]["Data"]
        if first not in failed_once:
            failed_once.add(first)
            return {0}
        return set()

    client = FlakyKinesis(plan)
    data = records(60, keys=lambda i: f"ride-{i % 3}")
    result = KinesisPublisher(client, "s", concurrency=1, backoff=no_sleep_backoff).publish(data)
    assert result.failed == []
    for key in ("ride-0", "ride-1", "ride-2"):
        stored = [d for k, d in client.stored if k == key]
        assert stored == [d for k, d in data if k == key]
    assert all(len(set(keys)) == len(keys) for keys in client.calls)  # one record per key per call


def test_gives_up_after_max_attempts_and_reports_every_unsent_record():
    client = FlakyKinesis(lambda call, recs: {0})
    result = KinesisPublisher(
        client, "s", concurrency=1, backoff=lambda **kw: Backoff(max_attempts=3, sleep=lambda s: None, **kw)
    ).publish(records(5))
    assert result.sent == 4
    assert len(result.failed) == 1
    assert len(client.stored) == 4
    assert len(client.calls) == 3  # max_attempts is the number of calls: the first and two retries
    assert result.retries == 2


def test_backoff_allows_exactly_max_attempts_with_growing_capped_delays():
    slept = []
    backoff = Backoff(base=0.1, cap=0.5, max_attempts=5, sleep=slept.append, rng=lambda: 1.0)
    assert [backoff.wait() for _ in range(5)] == [True, True, True, True, False]  # 4 waits: 5 attempts
    assert slept == [0.1, 0.2, 0.4, 0.5]


def test_backoff_gives_up_when_the_wait_would_use_all_the_time_left():
    """A wait as long as the time left leaves none for the attempt it waits for (mutmut found
    `>=` → `>` unnoticed)."""
    slept = []
    exact = Backoff(base=0.1, sleep=slept.append, rng=lambda: 1.0, time_left=lambda: 0.1)
    assert exact.wait() is False and slept == []
    enough = Backoff(base=0.1, sleep=slept.append, rng=lambda: 1.0, time_left=lambda: 0.1000001)
    assert enough.wait() is True and slept == [0.1]


def test_stops_retrying_when_time_runs_out():
    client = FlakyKinesis(lambda call, recs: {0})
    slept = []
    result = KinesisPublisher(
        client, "s", concurrency=1, backoff=lambda **kw: Backoff(sleep=slept.append, **kw)
    ).publish(records(3), time_left=lambda: 0.0 if client.calls else 1.0)  # time is up after the first call
    assert len(result.failed) == 1 and slept == []


def test_missing_stream_fails_fast_and_reports_all():
    error = ClientError(
        {
            "Error": {"Code": "ResourceNotFoundException", "Message": "no stream"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutRecords",
    )
    client = FlakyKinesis(lambda call, recs: error)
    result = KinesisPublisher(client, "s", concurrency=2, backoff=no_sleep_backoff).publish(records(700))
    assert result.failed == list(range(700))
    assert len(client.calls) == 2  # one attempt per chunk, no pointless retries
    assert result.errors == {"ResourceNotFoundException": 700}


def test_throttled_whole_call_is_retried():
    error = ClientError(
        {
            "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutRecords",
    )
    client = FlakyKinesis(lambda call, recs: error if call == 0 else set())
    result = KinesisPublisher(client, "s", concurrency=1, backoff=no_sleep_backoff).publish(records(10))
    assert result.failed == [] and result.sent == 10 and result.retries == 10


def test_against_moto_kinesis(aws):
    aws["kinesis"].create_stream(StreamName="out", ShardCount=2)
    result = KinesisPublisher(aws["kinesis"], "out", concurrency=1).publish(records(1200))
    assert result.sent == 1200 and not result.failed

    total = 0
    for shard in aws["kinesis"].list_shards(StreamName="out")["Shards"]:
        it = aws["kinesis"].get_shard_iterator(
            StreamName="out", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        total += len(aws["kinesis"].get_records(ShardIterator=it, Limit=10_000)["Records"])
    assert total == 1200


@pytest.mark.parametrize("concurrency", [1, 4])
def test_concurrency_does_not_change_the_outcome(concurrency):
    client = FlakyKinesis(lambda call, recs: {1} if call % 2 == 0 else set())
    result = KinesisPublisher(client, "s", concurrency=concurrency, backoff=no_sleep_backoff).publish(records(2000))
    assert result.sent == 2000 and Counter(k for k, _ in client.stored) == Counter(str(i) for i in range(2000))


def test_records_waiting_behind_a_stored_one_are_reported_when_time_runs_out():
    # b's record is throttled and time is up after the first call: a's second record, next in
    # line behind the stored first one, was never sent and must come back as failed.
    data = [("a", b"a1"), ("a", b"a2"), ("b", b"b1")]
    client = FlakyKinesis(lambda call, recs: {i for i, r in enumerate(recs) if r["PartitionKey"] == "b"})
    result = KinesisPublisher(client, "s", concurrency=1, backoff=no_sleep_backoff).publish(
        data, time_left=lambda: 0.0 if client.calls else 1.0
    )
    assert client.stored == [("a", b"a1")]
    assert result.sent == 1 and result.failed == [1, 2]


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    throttled=st.sets(st.integers(0, 39)),
    calls_before_time_is_up=st.integers(0, 6),
)
def test_every_record_is_sent_once_in_key_order_or_reported(keys, throttled, calls_before_time_is_up):
    """Whatever fails and whenever time runs out: each record is stored once or reported
    failed (never both, never neither), and per key the stored ones are a prefix in order."""
    data = [(str(key), f"{i}".encode()) for i, key in enumerate(keys)]
    client = FlakyKinesis(lambda call, recs: {j for j, r in enumerate(recs) if int(r["Data"]) in throttled})
    result = KinesisPublisher(client, "s", concurrency=2, backoff=no_sleep_backoff).publish(
        data, time_left=lambda: 1.0 if len(client.calls) < calls_before_time_is_up else 0.0
    )
    stored = [int(d) for _, d in client.stored]
    assert len(stored) == len(set(stored)) == result.sent
    assert sorted(stored + result.failed) == list(range(len(data)))
    for key in set(keys):
        mine = [i for i, k in enumerate(keys) if k == key]
        assert [i for i in stored if keys[i] == key] == mine[: len([i for i in stored if keys[i] == key])]


# -- the shard map the aggregating publisher groups records by -----------------------------------
def md5_point(key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.md5(key.encode()).digest(), byteorder="big")


def test_after_a_split_keys_map_to_the_open_child_that_holds_their_hash_never_the_closed_parent(aws):
    from rides.stream.publish import ShardMap

    kinesis = aws["kinesis"]
    kinesis.create_stream(StreamName="split", ShardCount=1)
    kinesis.split_shard(StreamName="split", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    shards = ShardMap(kinesis, "split")
    found = {key: shards.shard_of(key) for key in (f"ride-{i}" for i in range(200))}
    expected = {key: "shardId-000000000002" if md5_point(key) >= 2**127 else "shardId-000000000001" for key in found}
    assert found == expected and set(found.values()) == {"shardId-000000000001", "shardId-000000000002"}


def test_after_a_merge_every_key_maps_to_the_merged_shard(aws):
    from rides.stream.publish import ShardMap

    kinesis = aws["kinesis"]
    kinesis.create_stream(StreamName="merged", ShardCount=2)
    kinesis.merge_shards(
        StreamName="merged", ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001"
    )
    closed = {
        s["ShardId"]
        for s in kinesis.list_shards(StreamName="merged")["Shards"]
        if "EndingSequenceNumber" in s["SequenceNumberRange"]
    }
    assert closed == {"shardId-000000000000", "shardId-000000000001"}  # what the map must leave out
    shards = ShardMap(kinesis, "merged")
    assert {shards.shard_of(f"ride-{i}") for i in range(200)} == {"shardId-000000000002"}


class CountedShards:
    """ListShards of a stream whose shards the test changes, counting the calls."""

    def __init__(self, shard_ids):
        self.shard_ids, self.calls = shard_ids, 0

    def list_shards(self, **kwargs):
        self.calls += 1
        step = 2**128 // len(self.shard_ids)
        return {
            "Shards": [
                {"ShardId": sid, "HashKeyRange": {"StartingHashKey": str(i * step)}, "SequenceNumberRange": {}}
                for i, sid in enumerate(self.shard_ids)
            ]
        }


def test_the_map_is_read_once_and_again_only_when_it_is_older_than_its_refresh(monkeypatch):
    import rides.stream.publish as publish

    now = [1000.0]
    monkeypatch.setattr(publish.time, "monotonic", lambda: now[0])
    kinesis = CountedShards(["shardId-a"])
    shards = publish.ShardMap(kinesis, "s", refresh_seconds=60)
    assert {shards.shard_of(f"k{i}") for i in range(50)} == {"shardId-a"}
    now[0] += 59.0
    kinesis.shard_ids = ["shardId-b", "shardId-c"]  # resharded: seen at the next refresh, not before
    assert {shards.shard_of(f"k{i}") for i in range(50)} == {"shardId-a"} and kinesis.calls == 1
    now[0] += 2.0
    assert {shards.shard_of(f"k{i}") for i in range(50)} == {"shardId-b", "shardId-c"} and kinesis.calls == 2


# -- the aggregating publisher (KPL format): per shard, every record sent or reported ------------
class TwoShardKinesis(FlakyKinesis):
    """Two open shards split at 2**127; PutRecords fails the outer records `fail_plan` names."""

    def put_records(self, StreamName, Records):
        self.attempts = getattr(self, "attempts", []) + [r["Data"] for r in Records]
        return super().put_records(StreamName, Records)

    def list_shards(self, **kwargs):
        return {
            "Shards": [
                {"ShardId": "low", "HashKeyRange": {"StartingHashKey": "0"}, "SequenceNumberRange": {}},
                {"ShardId": "high", "HashKeyRange": {"StartingHashKey": str(2**127)}, "SequenceNumberRange": {}},
            ]
        }


def shard_of(key: str) -> str:
    return "high" if md5_point(key) >= 2**127 else "low"


def users_of(stored):
    """(outer key, [inner keys], [inner data]) of each stored aggregate."""
    from rides.stream.kpl import deaggregate

    out = []
    for key, data in stored:
        users = deaggregate(data)
        out.append((key, [u.partition_key for u in users], [u.data for u in users]))
    return out


def test_aggregates_hold_one_shards_records_in_order_under_a_key_of_that_shard():
    kinesis = TwoShardKinesis(lambda call, recs: set())
    sent = records(300, keys=lambda i: f"ride-{i % 120}")
    result = KinesisPublisher(kinesis, "out", aggregate=True, aggregate_bytes=1_000).publish(sent)
    assert (result.sent, result.failed, result.errors, result.retries) == (300, [], {}, 0)
    aggregates = users_of(kinesis.stored)
    assert result.kinesis_records == len(aggregates) > 2  # 1,000-byte aggregates: several a shard
    for outer, inner, _ in aggregates:
        assert {shard_of(k) for k in inner} == {shard_of(outer)}
    assert len({outer for outer, _, _ in aggregates}) == 2  # one key a shard: its aggregates in order
    for shard in ("low", "high"):  # each shard's records, in their order, once
        got = [d for outer, _, data in aggregates if shard_of(outer) == shard for d in data]
        assert got == [d for k, d in sent if shard_of(k) == shard]


def test_a_single_record_is_an_aggregate_of_one_under_its_own_key():
    kinesis = TwoShardKinesis(lambda call, recs: set())
    result = KinesisPublisher(kinesis, "out", aggregate=True).publish([("ride-1", b"x")])
    assert (result.sent, result.kinesis_records) == (1, 1)
    assert users_of(kinesis.stored) == [("ride-1", ["ride-1"], [b"x"])]


def test_a_failed_aggregate_reports_every_record_in_it_and_only_those():
    # The first outer record of every call fails, on every try: its members are reported.
    kinesis = TwoShardKinesis(lambda call, recs: {0})
    sent = records(40, keys=lambda i: f"ride-{i}")
    publisher = KinesisPublisher(
        kinesis, "out", aggregate=True, aggregate_bytes=200, backoff=lambda **kw: no_sleep_backoff(max_attempts=3, **kw)
    )
    result = publisher.publish(sent)
    delivered = [d for _, _, data in users_of(kinesis.stored) for d in data]
    assert sorted(result.failed + [int(d.split(b"-")[1]) for d in delivered]) == list(range(40))
    assert result.failed and len(delivered) == result.sent == 40 - len(result.failed)
    assert result.kinesis_records == len(kinesis.stored)
    failed_calls = sum(1 for call in kinesis.calls if call)  # one outer record failed per call
    assert result.errors == {"ProvisionedThroughputExceededException": failed_calls}
    assert result.retries == len(kinesis.attempts) - len(set(kinesis.attempts)) > 0  # entries sent again


def test_no_aggregate_is_sent_once_the_time_is_up():
    kinesis = TwoShardKinesis(lambda call, recs: set())
    result = KinesisPublisher(kinesis, "out", aggregate=True).publish(records(10), time_left=lambda: 0.0)
    assert (result.sent, result.failed, kinesis.calls) == (0, list(range(10)), [])
    assert result.errors == {"DeadlinePassed": 2}  # counted per aggregate, one a shard


def test_a_stream_whose_shards_cannot_be_listed_reports_every_record_with_the_reason(aws):
    result = KinesisPublisher(aws["kinesis"], "no-such-stream", aggregate=True).publish(records(7))
    assert (result.sent, result.failed) == (0, list(range(7)))
    assert result.errors == {"ResourceNotFoundException": 7}


def test_one_shard_map_per_stream_and_client_kept_across_publishers():
    from rides.stream.publish import shard_map

    first, second = TwoShardKinesis(lambda c, r: set()), TwoShardKinesis(lambda c, r: set())
    kept = shard_map(first, "a")
    assert shard_map(first, "a") is kept
    assert shard_map(first, "b") is not kept and shard_map(first, "b").stream_name == "b"
    other = shard_map(second, "a")
    assert other is not kept and other.kinesis is second
    assert shard_map(first, "a") is kept  # the other client's map did not replace it


def test_list_shards_follows_every_page_naming_the_stream_on_the_first_call_only():
    from rides.stream.aws import list_shards

    class Paged:
        def __init__(self):
            self.calls = []

        def list_shards(self, **kwargs):
            self.calls.append(kwargs)
            page = len(self.calls)
            return {"Shards": [{"ShardId": f"s{page}"}], **({"NextToken": f"t{page}"} if page < 3 else {})}

    kinesis = Paged()
    assert [s["ShardId"] for s in list_shards(kinesis, "out")] == ["s1", "s2", "s3"]
    assert kinesis.calls == [{"StreamName": "out"}, {"NextToken": "t1"}, {"NextToken": "t2"}]
