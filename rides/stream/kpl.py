"""The Kinesis Producer Library's aggregation format: many user records in one Kinesis record.

What a KPL (or awslabs' `aws-kinesis-agg`) producer puts on a stream when it aggregates
(https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md):

    F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf (16 bytes)

Lambda hands such a record to the function as it is: the function must deaggregate. A user
record's place on the stream is its outer record's sequence number plus its index in the
aggregate (the sub-sequence number), as the KCL numbers it.

The protobuf is parsed by protobuf's own runtime (upb: ~0.6 µs a user record, against ~3 µs
for a hand-written parser in Python), from the message types declared below instead of a
generated `_pb2` module (the reference's, generated for protobuf 3, needs sys.path tricks).
protobuf is imported on the first aggregated record only: it costs ~5 MB, and a stream of
plain records never pays it. What we do not take from the reference deaggregator: it passes a
record whose MD5 or protobuf is broken on as if it were a plain record (a consumer would then
dead-letter it as "bad UTF-8", hiding why); here each way a record can be broken has its
reason. tests/test_kpl.py holds both directions to `aws_kinesis_agg`'s records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from typing import NamedTuple

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
# The base64 text of every aggregated record starts so (F3 89 9A → "84ma"): the consumer tells
# them apart from plain records (JSON's "{" is base64 "e") before decoding anything.
MAGIC_BASE64_PREFIX = "84ma"


class AggregateError(ValueError):
    """An aggregated record that cannot be trusted as a whole (its MD5 or its protobuf)."""


class UserRecord(NamedTuple):
    partition_key: str
    explicit_hash_key: str | None
    data: bytes
    sub_sequence_number: int


@cache
def _aggregated_record_type():
    """The AggregatedRecord message class, built from the format's schema on first use."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    required, optional, repeated = field.LABEL_REQUIRED, field.LABEL_OPTIONAL, field.LABEL_REPEATED
    schema = descriptor_pb2.FileDescriptorProto(name="kpl.proto", package="aws.kinesis.protobuf", syntax="proto2")
    for name, fields in (
        ("Tag", [("key", 1, field.TYPE_STRING, required), ("value", 2, field.TYPE_STRING, optional)]),
        (
            "Record",
            [
                ("partition_key_index", 1, field.TYPE_UINT64, required),
                ("explicit_hash_key_index", 2, field.TYPE_UINT64, optional),
                ("data", 3, field.TYPE_BYTES, required),
                ("tags", 4, ".aws.kinesis.protobuf.Tag", repeated),
            ],
        ),
        (
            "AggregatedRecord",
            [
                ("partition_key_table", 1, field.TYPE_STRING, repeated),
                ("explicit_hash_key_table", 2, field.TYPE_STRING, repeated),
                ("records", 3, ".aws.kinesis.protobuf.Record", repeated),
            ],
        ),
    ):
        message = schema.message_type.add(name=name)
        for field_name, number, kind, label in fields:
            if isinstance(kind, str):
                message.field.add(name=field_name, number=number, label=label, type=field.TYPE_MESSAGE, type_name=kind)
            else:
                message.field.add(name=field_name, number=number, label=label, type=kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aws.kinesis.protobuf.AggregatedRecord"))


def _text(value: str | bytes, what: str) -> str:
    # proto2 string fields holding invalid UTF-8 come back as bytes.
    if isinstance(value, str):
        return value
    raise AggregateError(f"{what} is not UTF-8")


def deaggregate(raw: bytes) -> list[UserRecord]:
    """The user records of one aggregated record, in order; AggregateError (with the reason)
    if the record as a whole cannot be trusted, in which case none of it is."""
    from google.protobuf.message import DecodeError

    if len(raw) < len(MAGIC) + DIGEST_SIZE or raw[:4] != MAGIC:
        raise AggregateError("not a KPL aggregated record (magic bytes and an MD5 digest expected)")
    body = memoryview(raw)[4:-DIGEST_SIZE]
    if hashlib.md5(body).digest() != raw[-DIGEST_SIZE:]:
        raise AggregateError("aggregated record's MD5 digest does not match its contents")
    message = _aggregated_record_type()()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise AggregateError(f"aggregated record's protobuf cannot be parsed: {exc}") from None
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors()[:3])
        raise AggregateError(f"aggregated record lacks required fields: {missing}")
    keys = [_text(key, "a partition key") for key in message.partition_key_table]
    hash_keys = [_text(key, "an explicit hash key") for key in message.explicit_hash_key_table]
    records = []
    for sub, record in enumerate(message.records):
        index = record.partition_key_index
        if index >= len(keys):
            raise AggregateError(f"user record {sub}: partition key index {index} is not in the table")
        hash_key = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(hash_keys):
                raise AggregateError(
                    f"user record {sub}: explicit hash key index {record.explicit_hash_key_index} is not in the table"
                )
            hash_key = hash_keys[record.explicit_hash_key_index]
        records.append(UserRecord(keys[index], hash_key, record.data, sub))
    if not records:
        raise AggregateError("aggregated record holds no user records")
    return records


def expand(records: Iterable[dict]) -> list[dict]:
    """GetRecords' records (boto3's shape) with each aggregate replaced by its user records, as
    the KCL and Firehose see them: the outer record's SequenceNumber and arrival, their own
    PartitionKey and Data, and a SubSequenceNumber. One that cannot be trusted stays whole."""
    out: list[dict] = []
    for record in records:
        data = record.get("Data")
        if not isinstance(data, bytes | bytearray) or data[:4] != MAGIC:
            out.append(record)
            continue
        try:
            users = deaggregate(bytes(data))
        except AggregateError:
            out.append(record)
            continue
        for user in users:
            out.append(
                {
                    **record,
                    "PartitionKey": user.partition_key,
                    "Data": bytes(user.data),
                    "SubSequenceNumber": user.sub_sequence_number,
                }
            )
    return out


def aggregate(records: Sequence[tuple[str, bytes]]) -> bytes:
    """One aggregated record holding (partition key, data) user records, in order."""
    if not records:
        raise ValueError("nothing to aggregate")
    message = _aggregated_record_type()()
    table: dict[str, int] = {}
    for key, data in records:
        index = table.get(key)
        if index is None:
            index = table[key] = len(table)
            message.partition_key_table.append(key)
        message.records.add(partition_key_index=index, data=data)
    body = message.SerializeToString()
    return MAGIC + body + hashlib.md5(body).digest()


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _field_size(payload: int) -> int:
    return 1 + _varint_size(payload) + payload


def pack(records: Iterable[tuple[str, bytes]], max_bytes: int) -> list[tuple[str, bytes, list[int]]]:
    """Aggregate records, in order, into as few Kinesis records as fit in `max_bytes` each
    (data plus the outer partition key, Kinesis's measure). → (outer partition key, data,
    indices of the user records it holds). The outer key is the first user record's: the
    caller groups records by shard, so that every user record lands where its own key would."""
    out: list[tuple[str, bytes, list[int]]] = []
    current: list[tuple[str, bytes]] = []
    indices: list[int] = []
    keys: dict[str, int] = {}
    base = len(MAGIC) + DIGEST_SIZE
    size = base
    for i, (key, data) in enumerate(records):
        encoded = len(key.encode())
        while True:
            index = keys.get(key, len(keys))
            grow = _field_size(_field_size(len(data)) + 1 + _varint_size(index))
            if key not in keys:
                grow += _field_size(encoded)
            outer_key = len(current[0][0].encode()) if current else encoded
            if size + grow + outer_key <= max_bytes:
                break
            if not current:
                raise ValueError(f"record {i} ({len(data)} bytes) does not fit in an aggregated record of {max_bytes}")
            out.append((current[0][0], aggregate(current), indices))
            current, indices, keys, size = [], [], {}, base
        current.append((key, data))
        indices.append(i)
        keys.setdefault(key, len(keys))
        size += grow
    if current:
        out.append((current[0][0], aggregate(current), indices))
    return out
