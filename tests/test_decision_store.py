"""The decision table's sweep index and watch items (rides.stream.decision.store), called
directly: the due index read page by page and shard by shard, a throttled or refused query, the
watch items' reads and deletions under a deadline. The decision service's use of them is in
tests/test_decision.py."""

from __future__ import annotations

from itertools import islice

import boto3
import pytest

from rides.local.stack import decisions_table_spec
from rides.stream.decision import DecisionStore, StoreUnavailable
from rides.stream.decision.store import INDEX_SHARDS, WATCH_PREFIX, is_watch, watch_key
from rides.stream.failures import Failure
from rides.stream.retry import Backoff
from tests.helpers import Failing

NOW = 1_764_000_000.0


@pytest.fixture
def table(aws):
    client = boto3.client("dynamodb")
    client.create_table(**decisions_table_spec("ride-decisions"))
    return client


def index(client, ride_id: str, shard: int, due_at: float) -> None:
    """An item in the sweep's index, as the service writes them (watch items, old-way rides)."""
    item = {"ride_id": {"S": ride_id}, "due_shard": {"S": str(shard)}, "due_at": {"N": repr(due_at)}}
    client.put_item(TableName="ride-decisions", Item=item)


def recording_backoff(made: list, slept: list):
    def backoff(**kwargs):
        made.append(kwargs)
        return Backoff(sleep=slept.append, rng=lambda: 1.0, **kwargs)

    return backoff


def test_the_due_index_is_read_page_by_page_in_every_shard(table):
    for i in range(5):
        index(table, f"r{i}", 3, NOW - i)
    index(table, "other-shard", 6, NOW)
    index(table, "not-due", 3, NOW + 1)
    pages = list(islice(DecisionStore(table, "ride-decisions").due(NOW, page=2), 10))
    assert [len(page) for page in pages] == [2, 2, 1, 1]
    assert sorted(key for page in pages for key in page) == ["other-shard", "r0", "r1", "r2", "r3", "r4"]


def test_a_throttled_query_of_the_due_index_waits_and_goes_on_with_the_same_shard(table):
    index(table, "r1", 0, NOW)
    index(table, "r2", 5, NOW)
    made, slept = [], []
    failing = Failing(table, "query", "ProvisionedThroughputExceededException", failures=2)
    store = DecisionStore(failing, "ride-decisions", backoff=recording_backoff(made, slept))
    assert list(store.due(NOW, time_left=lambda: 7.0)) == [["r1"], ["r2"]]
    assert slept == [0.05, 0.1]  # a wait before each try again, none in a hot loop
    assert [q["ExpressionAttributeValues"][":shard"]["S"] for q in failing.calls[:3]] == ["0", "0", "0"]
    assert len(made) == INDEX_SHARDS and made[0]["time_left"]() == 7.0  # each backoff knows the time left


def test_a_refused_query_of_the_due_index_raises_with_its_code_and_waits_for_nothing(table):
    made, slept = [], []
    store = DecisionStore(
        Failing(table, "query", "AccessDeniedException"), "ride-decisions", backoff=recording_backoff(made, slept)
    )
    with pytest.raises(StoreUnavailable) as raised:
        list(store.due(NOW))
    assert raised.value.code == "AccessDeniedException" and slept == []
    assert str(raised.value).startswith("querying the due index: An error occurred (AccessDeniedException)")


def test_watch_items_are_read_consistently_and_a_failed_read_names_them(table):
    store = DecisionStore(table, "ride-decisions")
    assert store.watch(["a", "b"], NOW, 0) is None
    [key] = [k for page in store.due(NOW) for k in page]
    asked = []
    table.meta.events.register("provide-client-params.dynamodb.BatchGetItem", lambda params, **_: asked.append(params))
    assert store.watched([key]) == {key: ["a", "b"]}
    assert [p["RequestItems"]["ride-decisions"]["ConsistentRead"] for p in asked] == [True]
    refused = DecisionStore(Failing(table, "batch_get_item", "AccessDeniedException"), "ride-decisions")
    with pytest.raises(StoreUnavailable, match=r"^reading 1 watch items: "):
        refused.watched([key])


def test_watch_items_are_not_deleted_once_the_time_is_up(table):
    store = DecisionStore(table, "ride-decisions")
    store.watch(["a"], NOW, 0)
    [key] = [k for page in store.due(NOW) for k in page]
    outcome = store.unwatch([key], time_left=lambda: 0.0)
    assert outcome.failed == {key: Failure.DEADLINE_PASSED}
    assert store.watched([key]) == {key: ["a"]}
    assert store.unwatch([key]).failed == {} and store.watched([key]) == {}


def test_a_watch_key_is_longer_than_any_ride_id():
    """A ride id is a Kinesis partition key, at most 256 characters: one that starts like a
    watch key is still a ride."""
    assert is_watch(watch_key())
    assert not is_watch((WATCH_PREFIX + "x").ljust(256, "#"))
    assert is_watch((WATCH_PREFIX + "x").ljust(257, "#"))
    assert not is_watch("r".ljust(300, "#"))


def test_a_page_of_the_due_index_is_what_one_batch_read_takes(table):
    """The sweep reads each page's watch items with one BatchGetItem: at most 100 keys."""
    for i in range(101):
        index(table, f"r{i:03d}", 2, NOW)
    assert [len(page) for page in DecisionStore(table, "ride-decisions").due(NOW)] == [100, 1]
