"""A ride's state in DynamoDB: one item per ride, changed only by conditional writes.

The item is a small state machine, in the shape of Powertools' idempotency record:

    collecting ──(every required prediction, or the timeout)──▶ decided

- `version` is an optimistic lock: every write expects the version it read and stores the
  next one (the first, that there is none), so the stream processor and the timeout sweep can
  never overwrite each other's work (a write that lost the race re-reads the ride and merges).
- A ride is decided once: the decision is stored (with its `decision_id`, derived from the
  ride id and the version that stored it) before it is published. Which write units that
  costs is the point of the design (docs/design-notes.md, "What a ride costs"):
  - a ride whose predictions all arrive in one batch is written once, decided, and never
    enters the sweep's index: one write. If its publication fails or the function dies before
    it, the batch is retried (or redriven), finds the ride decided and publishes the stored
    decision again; every copy has the same `decision_id`, which downstream consumers drop;
  - a ride whose predictions arrive over batches is `collecting` in between: two writes of the
    ride, neither of which touches the sweep's index. The batch that first stores such rides
    writes, before them, one *watch* item listing them, due when they time out: one index
    entry for all of a batch's collecting rides, instead of an index write when each ride
    enters the index and another when deciding takes it out (4 write units a ride → ~2);
  - the sweep reads a due watch item's rides, decides those still collecting (`timeout`),
    publishes its decisions, and deletes the watch item; a ride it could not finish (its write
    lost a race, its publication failed) goes into a new watch item, due a timeout later.
- `due_shard`/`due_at` form the sparse index of what needs the sweep's attention: watch items.
  Rides a previous version stored with them (collecting, or the sweep's decided and not yet
  `published`) are still swept and marked the old way.
- A challenger's (the shadow's) predictions are kept in `shadow`, never decided on: the live
  evaluation reads them beside production's from the same item.

Write sharding of that index: one partition key value takes at most 1,000 writes/s, so a
single value (the old `pending = "1"`) would cap the service; and with `due_at` growing with
time, DynamoDB cannot split that hot key by its sort key either. INDEX_SHARDS values spread by a
hash of the ride id take 8,000 writes/s, and cost the sweep 8 small queries a minute.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from rides.stream.failures import Failure, StoreUnavailable
from rides.stream.kinesis_batch import Deadline, as_deadline
from rides.stream.retry import Backoff, error_code, is_retryable

DUE_INDEX = "due-index"
INDEX_SHARDS = 8
# Conditional writes in flight at once (boto3 clients are thread-safe): a batch of 500
# predictions touches up to 500 rides, ~5 ms a write inside a region.
WRITE_CONCURRENCY = 8

COLLECTING, DECIDED, PUBLISHED = "collecting", "decided", "published"
# A watch item's key: longer than any ride id (a ride id is a Kinesis partition key, at most
# 256 characters), so it never names a ride.
WATCH_PREFIX = "watch#"
WATCH_KEY_LENGTH = 280


WATCH_ITEM_BYTES = 100_000  # a watch item's list of ride ids, well under DynamoDB's 400 KB an item


def _groups_of_bytes(ride_ids: list[str], limit: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for ride_id in ride_ids:
        length = len(ride_id.encode()) + 3  # quotes and a comma
        if groups[-1] and size + length > limit:
            groups.append([])
            size = 0
        groups[-1].append(ride_id)
        size += length
    return groups


def watch_key() -> str:
    return (WATCH_PREFIX + uuid.uuid4().hex).ljust(WATCH_KEY_LENGTH, "#")


def is_watch(key: str) -> bool:
    return len(key) > 256 and key.startswith(WATCH_PREFIX)


def due_shard(key: str) -> str:
    return str(zlib.crc32(key.encode()) % INDEX_SHARDS)


@dataclass(frozen=True)
class RideState:
    """One ride: its predictions per model and, once decided, its decision."""

    ride_id: str
    first_seen: float
    expires_at: int
    predictions: dict[str, dict] = field(default_factory=dict)  # model → field, value, version
    decision: dict | None = None
    shadow: dict[str, dict] = field(default_factory=dict)  # a challenger's: model → field, value, version
    published: bool = False
    due_at: float | None = None  # when the sweep should look at it; None once published
    version: int = 0  # 0: not stored yet

    @property
    def status(self) -> str:
        if self.decision is None:
            return COLLECTING
        return PUBLISHED if self.published else DECIDED

    @property
    def due_shard(self) -> str:
        return due_shard(self.ride_id)

    def to_item(self) -> dict:
        """The DynamoDB item (attribute values), as stored at version `version`."""
        item: dict[str, Any] = {
            "ride_id": self.ride_id,
            "version": self.version,
            "first_seen": self.first_seen,
            "expires_at": self.expires_at,
            "predictions": self.predictions,
        }
        # Every byte counts: a decided ride (with a challenger's prediction) stays under 1 KB,
        # one write unit per write instead of two. `published` is only ever stored true.
        if self.published:
            item["published"] = True
        if self.decision is not None:
            item["decision"] = self.decision
        if self.shadow:
            item["shadow"] = self.shadow
        if self.due_at is not None:
            item["due_shard"] = self.due_shard
            item["due_at"] = self.due_at
        return {key: _SERIALIZE(_to_decimal(value)) for key, value in item.items()}

    @classmethod
    def from_item(cls, item: dict) -> RideState:
        plain = {key: _plain(_DESERIALIZE(value)) for key, value in item.items()}
        return cls(
            ride_id=str(plain["ride_id"]),
            first_seen=float(plain.get("first_seen", 0)),
            expires_at=int(plain.get("expires_at", 0)),
            predictions=plain.get("predictions") or {},
            decision=plain.get("decision"),
            shadow=plain.get("shadow") or {},
            published=bool(plain.get("published", False)),
            due_at=plain.get("due_at"),
            version=int(plain.get("version", 0)),
        )

    def for_api(self) -> dict:
        """What the web service returns for GET /predictions/{ride_id}."""
        return {
            "ride_id": self.ride_id,
            "status": self.status,
            "predictions": self.predictions,
            "decision": self.decision,
            "first_seen": self.first_seen,
        }

    def next_version(self, **changes) -> RideState:
        return replace(self, version=self.version + 1, **changes)


@dataclass
class WriteOutcome:
    written: list[RideState] = field(default_factory=list)  # as stored now
    conflicts: list[str] = field(default_factory=list)  # ride ids someone else changed meanwhile
    failed: dict[str, str] = field(default_factory=dict)  # ride id → error code


class DecisionStore:
    """The table, through the low-level client: consistent batch reads, conditional writes
    (one per ride, a few at a time), and the sweep's sharded index; every loop bounded by the
    deadline.

    Why not TransactWriteItems: the rides of a batch are independent, a transaction costs twice
    the write units, and one conflicting ride would cancel the other 99.
    """

    def __init__(self, client, table_name: str, *, backoff: Callable[..., Backoff] = Backoff):
        self.client = client
        self.table_name = table_name
        self.backoff = backoff

    # -- reading ------------------------------------------------------------------------------
    def get(self, ride_id: str) -> RideState | None:
        item = self.client.get_item(
            TableName=self.table_name, Key={"ride_id": {"S": ride_id}}, ConsistentRead=True
        ).get("Item")
        return RideState.from_item(item) if item else None

    def get_many(
        self, ride_ids: Sequence[str], time_left: Callable[[], float] | None = None, *, consistent: bool = True
    ) -> dict[str, RideState]:
        """The stored rides among `ride_ids` (strongly consistent unless told: the evaluation's
        join reads at half the price); StoreUnavailable when the table cannot be read before
        the deadline."""
        states = (RideState.from_item(item) for item in self._read(ride_ids, time_left, consistent, "rides"))
        return {state.ride_id: state for state in states}

    def _read(self, keys: Sequence[str], time_left, consistent: bool, what: str) -> list[dict]:
        """The items of these keys (BatchGetItem, 100 at a time, unprocessed keys again after a
        backoff); StoreUnavailable when the table cannot be read before the deadline."""
        deadline = as_deadline(time_left)
        ids = list(dict.fromkeys(keys))
        items: list[dict] = []
        for start in range(0, len(ids), 100):
            todo = [{"ride_id": {"S": key}} for key in ids[start : start + 100]]
            backoff = self.backoff(time_left=deadline)
            while todo:
                if deadline.passed:
                    raise StoreUnavailable(Failure.DEADLINE_PASSED, f"{len(todo)} {what} not read before the deadline")
                try:
                    response = self.client.batch_get_item(
                        RequestItems={self.table_name: {"Keys": todo, "ConsistentRead": consistent}}
                    )
                except (ClientError, BotoCoreError) as exc:
                    if not is_retryable(exc) or not backoff.wait():
                        raise StoreUnavailable(error_code(exc), f"reading {len(todo)} {what}: {exc}") from exc
                    continue
                items += response["Responses"].get(self.table_name, [])
                todo = (response.get("UnprocessedKeys") or {}).get(self.table_name, {}).get("Keys", [])
                if todo and not backoff.wait():  # throttled: wait, never resend in a hot loop
                    raise StoreUnavailable(Failure.UNPROCESSED_KEYS, f"{len(todo)} {what} unread after retries")
        return items

    def due(self, now: float, time_left: Callable[[], float] | None = None, page: int = 100) -> Iterator[list[str]]:
        """Pages of keys due for the sweep (watch items, and rides a previous version put in
        the index), shard by shard; stops quietly when the deadline passes."""
        deadline = as_deadline(time_left)
        for shard in range(INDEX_SHARDS):
            start: dict | None = None
            backoff = self.backoff(time_left=deadline)
            while True:
                if deadline.passed:
                    return
                kwargs = {"ExclusiveStartKey": start} if start else {}
                try:
                    response = self.client.query(
                        TableName=self.table_name,
                        IndexName=DUE_INDEX,
                        KeyConditionExpression="due_shard = :shard AND due_at <= :now",
                        ExpressionAttributeValues={":shard": {"S": str(shard)}, ":now": {"N": _number(now)}},
                        Limit=page,
                        **kwargs,
                    )
                except (ClientError, BotoCoreError) as exc:
                    if not is_retryable(exc) or not backoff.wait():
                        raise StoreUnavailable(error_code(exc), f"querying the due index: {exc}") from exc
                    continue
                ids = [item["ride_id"]["S"] for item in response.get("Items", [])]
                if ids:
                    yield ids
                start = response.get("LastEvaluatedKey")
                if not start:
                    break

    def watched(self, keys: Sequence[str], time_left: Callable[[], float] | None = None) -> dict[str, list[str]]:
        """Watch key → the ride ids it lists (a watch item deleted meanwhile is left out)."""
        items = self._read(keys, time_left, True, "watch items")
        return {item["ride_id"]["S"]: json.loads(item["rides"]["S"]) for item in items}

    # -- writing ------------------------------------------------------------------------------
    def watch(
        self, ride_ids: Sequence[str], due_at: float, expires_at: int, time_left: Callable[[], float] | None = None
    ) -> str | None:
        """New watch items listing these rides, due at `due_at` (one item unless the list is
        longer than WATCH_ITEM_BYTES: DynamoDB's items stop at 400 KB, and 10,000 ride ids of
        256 characters are 2.6 MB): written before the rides they list, so a collecting ride
        is always watched. → None when all are written, else an error code."""
        actions: dict[str, dict] = {}
        for group in _groups_of_bytes(list(ride_ids), WATCH_ITEM_BYTES):
            key = watch_key()
            item = {
                "ride_id": {"S": key},
                "rides": {"S": json.dumps(group, separators=(",", ":"))},
                "due_shard": {"S": due_shard(key)},
                "due_at": {"N": _number(due_at)},
                "expires_at": {"N": str(int(expires_at))},
            }
            actions[key] = {"Put": {"TableName": self.table_name, "Item": item}}
        outcome = self._write(actions, dict.fromkeys(actions), time_left)
        return next(iter(outcome.failed.values()), None)

    def unwatch(self, keys: Sequence[str], time_left: Callable[[], float] | None = None) -> WriteOutcome:
        """Delete watch items the sweep is done with."""
        actions = {key: {"Delete": {"TableName": self.table_name, "Key": {"ride_id": {"S": key}}}} for key in keys}
        return self._write(actions, dict.fromkeys(keys), time_left)

    def save(self, states: Sequence[RideState], time_left: Callable[[], float] | None = None) -> WriteOutcome:
        """Store each state at its `version`, only if the stored one is still `version - 1`."""
        actions = {}
        for state in states:
            put: dict[str, Any] = {"TableName": self.table_name, "Item": state.to_item()}
            if state.version == 1:
                put["ConditionExpression"] = "attribute_not_exists(ride_id)"
            else:
                put["ConditionExpression"] = "version = :expected"
                put["ExpressionAttributeValues"] = {":expected": {"N": str(state.version - 1)}}
            actions[state.ride_id] = {"Put": put}
        return self._write(actions, {state.ride_id: state for state in states}, time_left)

    def mark_published(self, states: Sequence[RideState], time_left: Callable[[], float] | None = None) -> WriteOutcome:
        """Decided → published, for exactly the decision that went out (its `decision_id`);
        the ride leaves the sweep's index. The version moves on, so a writer holding an older
        copy cannot put the ride back to `decided`."""
        actions = {
            state.ride_id: {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"ride_id": {"S": state.ride_id}},
                    "UpdateExpression": "SET published = :true, version = version + :one REMOVE due_shard, due_at",
                    "ConditionExpression": "decision.decision_id = :id",
                    "ExpressionAttributeValues": {
                        ":true": {"BOOL": True},
                        ":one": {"N": "1"},
                        ":id": {"S": state.decision["decision_id"]},
                    },
                }
            }
            for state in states
        }
        marked = {state.ride_id: state.next_version(published=True, due_at=None) for state in states}
        return self._write(actions, marked, time_left)

    def _write(
        self, actions: dict[str, dict], stored: dict[str, RideState], time_left: Callable[[], float] | None
    ) -> WriteOutcome:
        """One conditional write per ride, WRITE_CONCURRENCY at a time; `stored` is each ride as
        it is once its write succeeds. A ride whose condition failed is a conflict, one that
        may pass later (throttling, a timeout) is retried with backoff until the deadline, one
        the table refuses for good is failed with its code."""
        deadline: Deadline = as_deadline(time_left)
        outcome = WriteOutcome()
        pending = list(actions)
        backoff = self.backoff(time_left=deadline)
        with ThreadPoolExecutor(max(1, min(WRITE_CONCURRENCY, len(pending)))) as pool:
            while pending:
                if deadline.passed:
                    outcome.failed.update(dict.fromkeys(pending, Failure.DEADLINE_PASSED))
                    break
                retry: list[str] = []
                for ride_id, error in zip(
                    pending, pool.map(lambda r: self._write_one(actions[r]), pending), strict=True
                ):
                    if error is None:
                        outcome.written.append(stored[ride_id])
                    elif error == "ConditionalCheckFailedException":
                        outcome.conflicts.append(ride_id)
                    elif error == Failure.RETRYABLE:
                        retry.append(ride_id)
                    else:
                        outcome.failed[ride_id] = error
                if retry and not backoff.wait():  # throttled: wait, never resend in a hot loop
                    outcome.failed.update(dict.fromkeys(retry, Failure.RETRIES_EXHAUSTED))
                    retry = []
                pending = retry
        return outcome

    def _write_one(self, action: dict) -> str | None:
        """None when stored, else the error code (Failure.RETRYABLE: may pass on a later try)."""
        kind, request = next(iter(action.items()))
        try:
            getattr(self.client, {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind])(**request)
        except ClientError as exc:
            return Failure.RETRYABLE if is_retryable(exc) else error_code(exc)
        except BotoCoreError:  # a connection or read timeout: the write may be retried
            return Failure.RETRYABLE
        return None


_SERIALIZE = TypeSerializer().serialize
_DESERIALIZE = TypeDeserializer().deserialize
# DynamoDB's own number context: 38 digits, and it refuses what it cannot store.
_DYNAMO_CONTEXT = Context(prec=38, Emin=-128, Emax=126)


def _number(value: float) -> str:
    return repr(float(value))


def _to_decimal(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return _DYNAMO_CONTEXT.create_decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, dict):
        return {k: _to_decimal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_decimal(v) for v in value]
    return value


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
