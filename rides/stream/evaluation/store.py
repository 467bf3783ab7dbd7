"""Live evaluation's table: predictions and outcomes joined per ride, each (ride, model version,
role) evaluated exactly once.

One DynamoDB table, two kinds of item (and a catalog):

- ride item `pk = ride#<ride_id>`: one attribute per prediction (`p|<model>|<version>|<role>|<field>`)
  and per outcome (`o|<field>`, with `dropoff`). Written with UpdateItem SET (a repeat sets the
  same value; predictions and outcomes from concurrent invocations never overwrite each
  other), which returns the item as it now is. Kept for the evaluation window (TTL): an outcome
  later than that finds nothing to join.
- evaluation item `pk = eval#<model>#<version>#<role>#<shard>`, `sk = <hour>#<ride_id>`: the
  prediction and the outcome, keyed by the pair, so writing it again changes nothing. Which
  update completed a pair is read from that update's old image (ALL_OLD): one update only, so
  the metrics count each pair once, whatever the order, the duplicates or the delay.
  Sharded over EVAL_SHARDS partition keys so one version's writes are not one hot key.
- catalog `pk = catalog`, `sk = <model>#<version>#<role>`: which versions have predictions.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from rides.stream.events import OUTCOME_FIELDS, PredictionIn, RideCompleted
from rides.stream.kinesis_batch import as_deadline
from rides.stream.retry import Backoff, error_code, is_retryable

EVAL_SHARDS = 8
WRITE_CONCURRENCY = 8
RETRYABLE = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})


@dataclass(frozen=True)
class Evaluated:
    """One (ride, model version, role) pair: what was predicted and what happened."""

    ride_id: str
    model: str
    version: str
    role: str
    field: str
    predicted: float
    actual: float
    hour: str  # the drop-off hour, YYYY-MM-DDTHH

    @property
    def error(self) -> float:
        return self.predicted - self.actual


class EvaluationUnavailable(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _shard(ride_id: str) -> int:
    return zlib.crc32(ride_id.encode()) % EVAL_SHARDS


def _key(item: dict) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


def _hour(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H")


class EvaluationStore:
    def __init__(self, client, table_name: str, *, window_seconds: float = 2 * 86400, backoff=Backoff):
        self.client = client
        self.table_name = table_name
        self.window_seconds = window_seconds
        self.backoff = backoff

    # -- writing ----------------------------------------------------------------------------
    def record(
        self,
        predictions: Sequence[PredictionIn],
        completions: Sequence[RideCompleted],
        *,
        now: float,
        time_left: Callable[[], float] | None = None,
    ) -> tuple[list[Evaluated], dict[str, str]]:
        """Store a batch's predictions and outcomes; → (the pairs this batch completed, ride id →
        error code for rides whose records must be retried).

        One UpdateItem per ride returns the item as it was before (ALL_OLD): a pair is new
        exactly when it is complete now and was not before, which DynamoDB's serialized writes
        to an item make true for one update only, whatever the order, the repeats or the races.
        The evaluation rows of every pair this batch touched are (re)written, idempotently by
        their key, so a retry after a failed row write stores them; the metrics count new pairs."""
        updates: dict[str, dict[str, float]] = {}
        for p in predictions:
            updates.setdefault(p.ride_id, {})[f"p|{p.model}|{p.version}|{p.role}|{p.field}"] = p.value
        for c in completions:
            values = updates.setdefault(c.ride_id, {})
            values.update({f"o|{field}": value for field, value in c.outcomes.items()})
            # naive TLC times are New York wall-clock times; as UTC they only label the hour
            values["dropoff"] = c.dropoff_datetime.replace(tzinfo=UTC).timestamp()
        self._catalog({(p.model, p.version, p.role) for p in predictions}, time_left)
        before, failed = self._run(
            {ride_id: self._update_request(ride_id, values, now) for ride_id, values in updates.items()},
            self.client.update_item,
            time_left,
        )
        new: list[Evaluated] = []
        rows: list[Evaluated] = []
        for ride_id, old in before.items():
            values = updates[ride_id]
            after = {**old, **{name: {"N": repr(float(v))} for name, v in values.items()}}
            had = {self._eval_key(e) for e in pairs(ride_id, old)}
            for pair in pairs(ride_id, after):
                prediction = f"p|{pair.model}|{pair.version}|{pair.role}|{pair.field}"
                if prediction in values or f"o|{pair.field}" in values:
                    rows.append(pair)
                if self._eval_key(pair) not in had:
                    new.append(pair)
        failed.update(self._write_rows(rows, now, time_left))
        return new, failed

    def _write_rows(self, rows: list[Evaluated], now: float, time_left) -> dict[str, str]:
        """BatchWriteItem, 25 at a time, unprocessed items again with backoff. → ride id → code."""
        deadline = as_deadline(time_left)
        failed: dict[str, str] = {}
        # by the item's key, which is how DynamoDB names the unprocessed ones
        requests: dict[tuple[str, str], tuple[str, dict]] = {}
        for e in rows:
            item = self._eval_item(e, now)
            requests[_key(item)] = (e.ride_id, {"PutRequest": {"Item": item}})
        pending = list(requests)
        backoff = self.backoff(time_left=deadline)
        while pending:
            if deadline.passed:
                failed.update({requests[k][0]: "DeadlinePassed" for k in pending})
                break
            retry = []
            for start in range(0, len(pending), 25):
                chunk = pending[start : start + 25]
                try:
                    response = self.client.batch_write_item(
                        RequestItems={self.table_name: [requests[k][1] for k in chunk]}
                    )
                except ClientError as exc:
                    if not (error_code(exc) in RETRYABLE or is_retryable(exc)):
                        failed.update({requests[k][0]: error_code(exc) for k in chunk})
                        continue
                    retry += chunk
                    continue
                except BotoCoreError:
                    retry += chunk
                    continue
                unprocessed = response.get("UnprocessedItems", {}).get(self.table_name, [])
                retry += [_key(u["PutRequest"]["Item"]) for u in unprocessed]
            if retry and not backoff.wait():
                failed.update({requests[k][0]: "RetriesExhausted" for k in retry})
                retry = []
            pending = retry
        return failed

    def _update_request(self, ride_id: str, values: dict[str, float], now: float) -> dict:
        names = {f"#a{i}": name for i, name in enumerate(values)}
        sets = [f"#a{i} = :v{i}" for i in range(len(values))]
        return {
            "TableName": self.table_name,
            "Key": {"pk": {"S": f"ride#{ride_id}"}, "sk": {"S": "#"}},
            "UpdateExpression": "SET " + ", ".join([*sets, "expires_at = if_not_exists(expires_at, :ttl)"]),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {
                **{f":v{i}": {"N": repr(float(v))} for i, v in enumerate(values.values())},
                ":ttl": {"N": str(int(now + self.window_seconds))},
            },
            "ReturnValues": "ALL_OLD",
        }

    def _eval_key(self, e: Evaluated) -> str:
        return f"{e.model}#{e.version}#{e.role}#{e.ride_id}"

    def _eval_item(self, e: Evaluated, now: float) -> dict:
        return {
            "pk": {"S": f"eval#{e.model}#{e.version}#{e.role}#{_shard(e.ride_id)}"},
            "sk": {"S": f"{e.hour}#{e.ride_id}"},
            "ride_id": {"S": e.ride_id},
            "field": {"S": e.field},
            "predicted": {"N": repr(e.predicted)},
            "actual": {"N": repr(e.actual)},
            "expires_at": {"N": str(int(now + 7 * 86400))},
        }

    def _catalog(self, triples, time_left) -> None:
        """Record which (model, version, role) predicted; already there is fine."""
        requests = {
            f"{model}#{version}#{role}": {
                "TableName": self.table_name,
                "Item": {"pk": {"S": "catalog"}, "sk": {"S": f"{model}#{version}#{role}"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
            for model, version, role in triples
        }
        _, failed = self._run(requests, self.client.put_item, time_left)
        failed = {key: code for key, code in failed.items() if code != "Conditional"}
        if failed:
            raise EvaluationUnavailable(next(iter(failed.values())), f"catalog not written: {failed}")

    def _run(self, requests: dict[str, dict], call, time_left) -> tuple[dict[str, dict], dict[str, str]]:
        """Each request once, WRITE_CONCURRENCY at a time, throttled ones again with backoff
        until the deadline. → (key → the call's Attributes for those that succeeded, key → code)."""
        deadline = as_deadline(time_left)
        done: dict[str, dict] = {}
        failed: dict[str, str] = {}
        pending = list(requests)
        backoff = self.backoff(time_left=deadline)

        def one(key: str):
            try:
                return call(**requests[key]).get("Attributes", {}), None
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConditionalCheckFailedException":
                    return None, "Conditional"
                return None, "Retryable" if code in RETRYABLE or is_retryable(exc) else code
            except BotoCoreError:
                return None, "Retryable"

        with ThreadPoolExecutor(max(1, min(WRITE_CONCURRENCY, len(pending) or 1))) as pool:
            while pending:
                if deadline.passed:
                    failed.update(dict.fromkeys(pending, "DeadlinePassed"))
                    break
                retry = []
                for key, (attributes, code) in zip(pending, pool.map(one, pending), strict=True):
                    if code is None:
                        done[key] = attributes
                    elif code == "Retryable":
                        retry.append(key)
                    else:
                        failed[key] = code
                if retry and not backoff.wait():
                    failed.update(dict.fromkeys(retry, "RetriesExhausted"))
                    retry = []
                pending = retry
        return done, failed

    # -- reading ----------------------------------------------------------------------------
    def versions(self) -> list[tuple[str, str, str]]:
        """(model, version, role) of everything that has predicted."""
        items = self._query({":pk": {"S": "catalog"}}, "pk = :pk")
        return [tuple(item["sk"]["S"].split("#", 2)) for item in items]

    def count(self, model: str, version: str, role: str) -> int:
        """How many pairs of a version in a role are evaluated (a COUNT query per shard: no items read back)."""
        total = 0
        for shard in range(EVAL_SHARDS):
            start = None
            while True:
                page = self.client.query(
                    TableName=self.table_name,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": f"eval#{model}#{version}#{role}#{shard}"}},
                    Select="COUNT",
                    **({"ExclusiveStartKey": start} if start else {}),
                )
                total += page["Count"]
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
        return total

    def evaluated(self, model: str, version: str, role: str) -> list[Evaluated]:
        """Every evaluated pair of a model version in a role (within the items' TTL)."""
        rows = []
        for shard in range(EVAL_SHARDS):
            for item in self._query({":pk": {"S": f"eval#{model}#{version}#{role}#{shard}"}}, "pk = :pk"):
                hour = item["sk"]["S"].split("#", 1)[0]
                rows.append(
                    Evaluated(
                        item["ride_id"]["S"],
                        model,
                        version,
                        role,
                        item["field"]["S"],
                        float(item["predicted"]["N"]),
                        float(item["actual"]["N"]),
                        hour,
                    )
                )
        return rows

    def _query(self, values: dict, condition: str) -> list[dict]:
        items, start = [], None
        while True:
            kwargs = {"ExclusiveStartKey": start} if start else {}
            page = self.client.query(
                TableName=self.table_name,
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                **kwargs,
            )
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items


def pairs(ride_id: str, item: dict) -> list[Evaluated]:
    """The (prediction, outcome) pairs a ride item holds: every prediction whose field has an outcome."""
    if "dropoff" not in item:
        return []
    hour = _hour(float(item["dropoff"]["N"]))
    out = []
    for name, value in item.items():
        if not name.startswith("p|"):
            continue
        _, model, version, role, field = name.split("|", 4)
        outcome = item.get(f"o|{field}")
        if outcome is not None and field in OUTCOME_FIELDS:
            out.append(Evaluated(ride_id, model, version, role, field, float(value["N"]), float(outcome["N"]), hour))
    return out
