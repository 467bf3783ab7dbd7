"""The KPL aggregation format (rides.stream.kpl), held to awslabs' reference implementation
(`aws_kinesis_agg`) in both directions, and every way an aggregated record can be broken."""

from __future__ import annotations

import base64
import hashlib
import itertools

import orjson
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records
from hypothesis import given, settings
from hypothesis import strategies as st

from rides.stream.kpl import MAGIC, MAGIC_BASE64_PREFIX, AggregateError, aggregate, deaggregate, pack


def reference_aggregates(records, max_size=None):
    """What a producer using aws-kinesis-agg puts on the stream: (partition key, explicit hash
    key, data) per Kinesis record."""
    aggregator = RecordAggregator(**({"max_size": max_size} if max_size else {}))
    out = []
    for key, data, *hash_key in records:
        full = aggregator.add_user_record(key, data, *hash_key)
        if full is not None:
            out.append(full.get_contents())
    last = aggregator.clear_and_get()
    if last is not None:
        out.append(last.get_contents())
    return out


def rides(n, start=1):
    return [
        (str(i), orjson.dumps({"ride_id": i, "ride": {"PULocationID": 7, "DOLocationID": 8}}))
        for i in range(start, start + n)
    ]


def lambda_record(data: bytes, seq="1") -> dict:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": seq,
            "approximateArrivalTimestamp": 1.5,
            "partitionKey": "x",
            "data": base64.b64encode(data).decode(),
        }
    }


def test_records_the_reference_aggregated_come_back_in_order_with_keys_and_sub_sequence_numbers():
    records = rides(300)
    [(outer_key, _, data)] = reference_aggregates(records)
    users = deaggregate(data)
    assert [(u.partition_key, bytes(u.data)) for u in users] == records
    assert [u.sub_sequence_number for u in users] == list(range(300))
    assert outer_key == "1"  # the reference keys the outer record by its first user record


def test_explicit_hash_keys_and_repeated_partition_keys_are_resolved_through_the_tables():
    records = [("a", b"1", "11"), ("b", b"2", "22"), ("a", b"3", "11"), ("c", b"4")]
    [(_, _, data)] = reference_aggregates(records)
    users = deaggregate(data)
    assert [(u.partition_key, u.explicit_hash_key, bytes(u.data)) for u in users] == [
        ("a", "11", b"1"),
        ("b", "22", b"2"),
        ("a", "11", b"3"),
        ("c", None, b"4"),
    ]


def test_the_reference_splits_at_its_size_limit_and_every_part_reads_back():
    records = rides(3000)
    parts = reference_aggregates(records, max_size=64 * 1024)
    assert len(parts) == 4
    back = [(u.partition_key, bytes(u.data)) for _, _, data in parts for u in deaggregate(data)]
    assert back == records


def test_our_aggregate_is_byte_for_byte_the_reference_and_the_reference_reads_it():
    records = [*rides(50), ("7", b"again")]
    [(_, _, theirs)] = reference_aggregates(records)
    ours = aggregate(records)
    assert ours == theirs
    users = deaggregate_records([lambda_record(ours)])
    assert [(u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"])) for u in users] == records
    assert [u["kinesis"]["subSequenceNumber"] for u in users] == list(range(len(records)))


def test_every_aggregated_record_starts_with_the_base64_prefix_the_batch_checks():
    assert base64.b64encode(aggregate(rides(1))).decode().startswith(MAGIC_BASE64_PREFIX)
    assert not base64.b64encode(b'{"ride_id": 1}').decode().startswith(MAGIC_BASE64_PREFIX)


def with_digest(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (lambda good: good[:-1] + bytes([good[-1] ^ 1]), "MD5 digest does not match"),
        (lambda good: good[:20] + bytes([good[20] ^ 0x40]) + good[21:], "MD5 digest does not match"),
        (lambda good: good[:40], "MD5 digest does not match"),  # truncated in transit
        (lambda good: with_digest(b"\x1a\x50abc"), "protobuf cannot be parsed"),
        (lambda good: with_digest(b"\x0a\x011\x1a\x02\x08\x00"), "lacks required fields"),  # a record without data
        (  # four without: the first three named
            lambda good: with_digest(b"\x0a\x011" + b"\x1a\x02\x08\x00" * 4),
            r"lacks required fields: records\[0\]\.data, records\[1\]\.data, records\[2\]\.data$",
        ),
        (lambda good: with_digest(b"\x0a\x011\x1a\x05\x08\x03\x1a\x01x"), "partition key index 3 is not in the table"),
        (lambda good: with_digest(b"\x0a\x011\x1a\x05\x08\x01\x1a\x01x"), "record 0: partition key index 1 is not"),
        (lambda good: with_digest(b"\x0a\x011\x1a\x07\x08\x00\x10\x01\x1a\x01x"), "explicit hash key index 1"),
        (lambda good: with_digest(b"\x0a\x011\x1a\x07\x08\x00\x10\x00\x1a\x01x"), "explicit hash key index 0 is not"),
        (lambda good: with_digest(b"\x0a\x02\xff\xfe\x1a\x05\x08\x00\x1a\x01x"), "partition key is not UTF-8"),
        (
            lambda good: with_digest(b"\x0a\x011\x12\x02\xff\xfe\x1a\x07\x08\x00\x10\x00\x1a\x01x"),
            "an explicit hash key is not UTF-8",
        ),
        (lambda good: with_digest(b"\x0a\x011"), "^aggregated record holds no user records$"),
        (lambda good: with_digest(b""), "holds no user records"),  # the shortest aggregate there is
        (lambda good: MAGIC + b"\x00" * 3, r"^not a KPL aggregated record \(magic bytes and an MD5 digest expected\)$"),
    ],
)
def test_an_aggregate_that_cannot_be_trusted_is_refused_as_a_whole_with_its_reason(raw, reason):
    good = aggregate(rides(5))
    with pytest.raises(AggregateError, match=reason):
        deaggregate(raw(good))


def test_nothing_is_not_an_aggregate():
    with pytest.raises(ValueError, match=r"^nothing to aggregate$"):
        aggregate([])


def test_the_reference_would_have_passed_a_corrupt_aggregate_on_as_a_plain_record():
    """Why rides.stream.kpl reads the format itself: the reference hides the corruption."""
    good = aggregate(rides(5))
    corrupt = good[:-1] + bytes([good[-1] ^ 1])
    [passed] = deaggregate_records([lambda_record(corrupt)])
    assert "subSequenceNumber" not in passed["kinesis"]  # handed on whole, as if it were a plain record


def test_unknown_fields_from_a_newer_producer_are_skipped():
    body = aggregate([("k", b"data")])[4:-16] + b"\x28\x05"  # field 5, a varint
    [user] = deaggregate(with_digest(body))
    assert (user.partition_key, bytes(user.data)) == ("k", b"data")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=3000)), min_size=1, max_size=60),
    st.integers(min_value=3100, max_value=40_000),
)
def test_pack_fills_records_to_the_byte_without_passing_the_limit(records, limit):
    packed = pack(records, limit)
    assert [i for _, _, indices in packed for i in indices] == list(range(len(records)))
    for outer_key, data, indices in packed:
        assert len(data) + len(outer_key.encode()) <= limit
        assert outer_key == records[indices[0]][0]
        assert [(u.partition_key, bytes(u.data)) for u in deaggregate(data)] == [records[i] for i in indices]
    # as full as it can be: the next record would not have fitted
    for (key, _, indices), (_, _, following) in itertools.pairwise(packed):
        grown = aggregate([records[i] for i in indices] + [records[following[0]]])
        assert len(grown) + len(key.encode()) > limit


# Where a protobuf length grows by a byte: 7 bits a varint byte.
VARINT_EDGES = [0, 1, 126, 127, 128, 129, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28]


def test_pack_counts_each_length_and_index_in_bytes_as_protobuf_writes_them():
    """pack sizes an aggregate before building it; random records seldom sit on the edges where
    a length takes one more byte, so each edge is checked against protobuf's own encoding."""
    from google.protobuf.internal.encoder import _VarintBytes

    from rides.stream.kpl import _aggregated_record_type, _field_size, _varint_size

    assert [_varint_size(v) for v in VARINT_EDGES] == [len(_VarintBytes(v)) for v in VARINT_EDGES]
    message = _aggregated_record_type()
    for n in (0, 1, 126, 127, 128, 129, 16383, 16384, 16385):
        assert _field_size(n) == len(message(partition_key_table=["k" * n]).SerializeToString()), n


def exact_limits(records: list[tuple[str, bytes]]):
    """Limits at exactly the size of the first k records' aggregate (all k fit in the first)
    and a byte less (only k - 1 do): (limit, k)."""
    key = len(records[0][0].encode())
    for k in range(2, len(records) + 1):
        exact = len(aggregate(records[:k])) + key
        yield exact, k
        yield exact - 1, k - 1


EDGE_RECORDS = {
    # data lengths on the varint edges (127/128, 16383/16384 bytes with their headers)
    **{f"data {n}": [(f"ride-{i % 3}", b"x" * (n + i % 2)) for i in range(6)] for n in (118, 121, 123, 16371, 16374)},
    # the partition key table's indices past 127 take two bytes; a repeated key keeps its own
    "many keys": [(f"r{i}", b"{}") for i in range(131)] + [("r0", b"{}"), ("r130", b"{}"), ("r7", b"{}")],
    # outer keys of other lengths than the record that does not fit
    "key lengths": [("a" * (1 + 37 * (i % 4)), b"y" * 300) for i in range(8)],
}


@pytest.mark.parametrize("records", EDGE_RECORDS.values(), ids=EDGE_RECORDS.keys())
def test_pack_fills_records_to_the_byte_where_lengths_grow_a_byte(records):
    """Packed at exactly the size of its first k records, an aggregate holds all k; a byte
    less, k - 1. Each fits, reads back, and carries its first ride's key outside."""
    for limit, first in exact_limits(records):
        packed = pack(records, limit)
        assert packed[0][2] == list(range(first)), (limit, first)
        assert [i for _, _, indices in packed for i in indices] == list(range(len(records)))
        for key, data, indices in packed:
            assert len(data) + len(key.encode()) <= limit
            assert data == aggregate([records[i] for i in indices])
            assert key == records[indices[0]][0]


def test_a_record_too_large_to_aggregate_is_refused_before_anything_is_built():
    with pytest.raises(ValueError, match="does not fit"):
        pack([("k", b"x" * 5000)], 4096)


def test_readers_see_the_rides_of_an_aggregate_as_the_kcl_and_firehose_do():
    from rides.stream.kpl import expand

    good = aggregate(rides(3))
    corrupt = good[:-1] + bytes([good[-1] ^ 1])
    base = {"SequenceNumber": "9", "ApproximateArrivalTimestamp": 1.0, "PartitionKey": "outer"}
    out = expand(
        [
            {**base, "Data": b'{"ride_id": 0}'},
            {**base, "Data": good},
            {**base, "Data": corrupt},
            {**base, "SequenceNumber": "10"},  # no data at all
            {**base, "SequenceNumber": "11", "Data": good},
        ]
    )
    assert [(r["PartitionKey"], r.get("SubSequenceNumber"), r["SequenceNumber"]) for r in out] == [
        ("outer", None, "9"),
        ("1", 0, "9"),
        ("2", 1, "9"),
        ("3", 2, "9"),
        ("outer", None, "9"),  # one that cannot be trusted stays whole
        ("outer", None, "10"),
        *[(str(i + 1), i, "11") for i in range(3)],  # and the records after it are read on
    ]
    assert [r["Data"] for r in out[1:4]] == [data for _, data in rides(3)]


def test_the_archive_holds_each_ride_of_an_aggregated_completion_record():
    from datetime import UTC, datetime

    import boto3
    from moto import mock_aws

    from rides.operate.archive import read_archive, write_archive
    from rides.stream.events import completion_json

    completions = [
        (str(i), completion_json(i, datetime(2021, 2, 3, 8, i), duration_minutes=10.0 + i)) for i in range(5)
    ]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="archive-bucket")
        arrival = datetime(2026, 12, 2, 3, tzinfo=UTC)
        record = {"Data": aggregate(completions), "SequenceNumber": "1", "ApproximateArrivalTimestamp": arrival}
        write_archive(s3, "archive-bucket", "ride-completions", "completions", [record])
        table = read_archive(s3, "archive-bucket", "ride-completions")
    assert sorted(table.column("ride_id").to_pylist()) == ["0", "1", "2", "3", "4"]
