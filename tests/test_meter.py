"""The request meter's arithmetic, held to DynamoDB's documented rules on items of known sizes,
and to Kinesis's, Firehose's and SQS's billing units."""

from __future__ import annotations

import pytest

from rides.local.meter import (
    Index,
    firehose_billed_bytes,
    function_of,
    index_writes,
    item_size,
    on_demand_kb,
    put_payload_units,
    read_units,
    sqs_requests,
    value_size,
    write_units,
)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "ride#156"}, 8),  # UTF-8 bytes
        ({"S": "é"}, 2),
        ({"N": "156"}, 3),  # 3 significant digits: 2 bytes + 1
        ({"N": "21.3"}, 3),  # 213
        ({"N": "1000"}, 2),  # trailing zeroes trimmed: 1
        ({"N": "0.0012345"}, 4),  # leading zeroes trimmed: 12345
        ({"N": "-7"}, 2),
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"SS": ["a", "bc"]}, 3),
        ({"L": []}, 3),  # a list's or map's 3 bytes, empty or not
        ({"L": [{"S": "ab"}, {"N": "1"}]}, 3 + (2 + 1) + (2 + 1)),  # and 1 byte per element
        ({"M": {"model": {"S": "ride-fare"}}}, 3 + 5 + 9 + 1),
    ],
)
def test_attribute_values_have_dynamodbs_documented_sizes(value, size):
    assert value_size(value) == size


def test_an_items_size_is_its_names_and_values():
    item = {"pk": {"S": "ride#156"}, "sk": {"S": "#"}, "version": {"N": "4"}}
    assert item_size(item) == (2 + 8) + (2 + 1) + (7 + 2)
    assert item_size(None) == 0


@pytest.mark.parametrize(
    ("size", "wru", "rru_strong", "rru_eventual"),
    [(1, 1, 1.0, 0.5), (1024, 1, 1.0, 0.5), (1025, 2, 1.0, 0.5), (4096, 4, 1.0, 0.5), (4097, 5, 2.0, 1.0)],
)
def test_capacity_units_round_up_per_1_kb_written_and_4_kb_read(size, wru, rru_strong, rru_eventual):
    assert write_units(size) == wru
    assert read_units(size, consistent=True) == rru_strong
    assert read_units(size, consistent=False) == rru_eventual


def test_a_write_costs_each_index_it_touches_and_twice_when_the_index_key_moves():
    due = Index("due-index", ("due_shard", "due_at"), "KEYS_ONLY")
    keys = ("ride_id",)
    collecting = {"ride_id": {"S": "r1"}, "due_shard": {"S": "3"}, "due_at": {"N": "1700000060"}}
    moved = {**collecting, "due_at": {"N": "1700000120"}}
    decided = {"ride_id": {"S": "r1"}, "decision": {"S": "accept"}}  # out of the index
    assert index_writes([due], keys, None, collecting) == 1  # enters the index
    assert index_writes([due], keys, collecting, {**collecting, "x": {"N": "1"}}) == 0  # keys-only: unchanged
    assert index_writes([due], keys, collecting, moved) == 2  # a delete and a put
    assert index_writes([due], keys, moved, decided) == 1  # leaves it
    assert index_writes([due], keys, decided, {**decided, "y": {"S": "z"}}) == 0  # never in it
    everything = Index("all", ("due_shard", "due_at"), "ALL")
    assert index_writes([everything], keys, collecting, {**collecting, "x": {"S": "a" * 2000}}) == 2  # its 2 KB


def test_kinesis_firehose_and_sqs_bill_by_their_own_steps():
    assert [put_payload_units(n) for n in (1, 200, 25 * 1024, 25 * 1024 + 1)] == [1, 1, 1, 2]
    assert [firehose_billed_bytes(n) for n in (1, 200, 5 * 1024, 5 * 1024 + 1)] == [5120, 5120, 5120, 10240]
    assert [sqs_requests(n) for n in (10, 64 * 1024, 64 * 1024 + 1)] == [1, 1, 2]
    # on-demand streams: "the size of each record rounded up to the nearest 1 KB"
    assert [on_demand_kb(n) for n in (1, 1024, 1025, 4608)] == [1, 1, 2, 5]


def test_a_request_is_counted_against_the_function_its_client_names():
    agent = "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux rides-function/ride-fare-consumer-stg"
    assert function_of(agent) == "ride-fare-consumer-stg"
    assert function_of("aws-cli/2.0") == "(no function)"


def test_a_transaction_costs_two_write_units_per_kb_of_each_item():
    """DynamoDB's rule for TransactWriteItems: each item written costs twice a standard write."""
    from rides.local.meter import dynamodb_before, dynamodb_units, tables_named

    stored = {"sums#a": {"pk": {"S": "sums"}, "sk": {"S": "a"}, "n": {"N": "3"}}}

    class Tables:  # what the emulator sees of the table, after the writes below
        def keys(self, name):
            return ("pk", "sk")

        def indexes(self, name):
            return []

        def item(self, name, key):
            return stored.get(f"{key['pk']['S']}#{key['sk']['S']}")

    big = {"pk": {"S": "waiting"}, "sk": {"S": "w"}, "entries": {"S": "x" * 1500}}
    request = {
        "TransactItems": [
            {"Put": {"TableName": "t", "Item": big}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "sums"}, "sk": {"S": "a"}}}},
        ]
    }
    assert tables_named(request) == "t"  # the meter's row names the table the actions write
    before = dynamodb_before(Tables(), "TransactWriteItems", request)
    stored["waiting#w"] = big
    assert dynamodb_units(Tables(), "TransactWriteItems", request, before, {}) == {
        "write_units": 2 * 2 + 2 * 1,
        "read_units": 0.0,
    }
    cancelled = {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"}
    assert dynamodb_units(Tables(), "TransactWriteItems", request, before, cancelled)["write_units"] == 6


def test_the_emulator_backs_a_table_up_once_per_transaction_and_still_rolls_back(aws):
    """moto deep-copied the table once per action of a transaction; the emulator's patch copies
    it once, and a cancelled transaction still leaves the table as it was."""
    import copy

    import boto3
    from botocore.exceptions import ClientError
    from moto.dynamodb import models

    from rides.local.moto_patches import copy_each_table_once

    copy_each_table_once()
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    copies = []
    real = copy.deepcopy

    def counting(obj, memo=None):
        copies.extend([1] if isinstance(obj, models.Table) else [])
        return real(obj, memo)

    copy.deepcopy = counting
    try:
        puts = [{"Put": {"TableName": "t", "Item": {"k": {"S": str(i)}}}} for i in range(20)]
        dynamodb.transact_write_items(TransactItems=puts)
        assert len(copies) == 1
        refused = [
            *puts[:5],
            {"Put": {"TableName": "t", "Item": {"k": {"S": "0"}}, "ConditionExpression": "attribute_not_exists(k)"}},
        ]
        with pytest.raises(ClientError, match="TransactionCanceled"):
            dynamodb.transact_write_items(
                TransactItems=[{"Put": {"TableName": "t", "Item": {"k": {"S": "new"}}}}, refused[-1]]
            )
    finally:
        copy.deepcopy = real
    assert dynamodb.scan(TableName="t")["Count"] == 20  # "new" rolled back
