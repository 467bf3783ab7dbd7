"""Live evaluation's table: running error sums per model version, role and hour, every ride's
outcome counted exactly once.

The evaluation joins each ride-completed event with the ride's item in the decisions table,
where the decision service already keeps production's predictions and a challenger's beside
them (rides.stream.decision.store), and adds the errors to sums (DynamoDB ADD). Items:

- `pk = sums`, `sk = <model>#<version>#<role>#<hour>`: n and the sums of the error, its square
  and its absolute value: RMSE, MAE and bias of any set of hours, exactly (metrics.Summary).
  The hour is the one the outcome was counted in (in production about its drop-off hour, as a
  ride's outcome is sent when it ends): a batch's completions share it, so one sums item per
  model version and batch, whatever the batch size. Not the drop-off time the event carries:
  a replay of an old month would spread a batch over hundreds of hours, an item each.
- `pk = paired`, `sk = <model>#<challenger>#<incumbent>#<hour>`: the same sums for both sides,
  on the rides both predicted: the promotion gate's comparison on the same rides.
- `pk = mark`, `sk = <stream>#<shard>`: the position (sequence, sub-sequence) of the last
  completion counted from that shard.
- `pk = waiting`, `sk = <stream>#<shard>#<position>`: completions whose ride was not decided
  yet (or not predicted yet by every consumer and challenger), packed as rows (ride id and
  outcomes, the field names and the time they came once an item) into items under 1 KB: each
  transactional write or deletion of one costs 2 write units, shared by the ~12-25 completions
  it holds. The sweep joins them again until the window passes, and rewrites an item only once
  every ride in it is ready, or it has waited RESOLVE_PARTIAL_AFTER_SECONDS: a rewrite per
  decided ride would cost the item's size each time.
- `pk = trace`, `sk = <ride id>`: what was joined for a probe ride (`smoke-…`): how the smoke
  test sees its one ride evaluated among the others.

Exactly once. ADD is not idempotent, and a batch can be delivered again (a retry, a redrive).
So the sums of a chunk of completions, its waiting completions and the shard's new mark are
one transaction, on the condition that the mark is still what this invocation read: a
completion at or before the mark was counted, and is skipped. A shard is read by one
invocation at a time (parallelization factor 1), so the condition only fails when something
else moved the mark: the chunk is then read again. A waiting item is resolved the same way:
its sums and its rewrite (or deletion) in one transaction, on its version.

What it costs: one read per completion (eventually consistent, half a unit), and per chunk of
up to ~100 sums a transaction (two write units per item): at a few hundred completions per
batch, well under a tenth of a write unit per ride, where a row per ride and version cost six.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from rides.stream.decision.store import DecisionStore, RideState
from rides.stream.evaluation.metrics import Summary
from rides.stream.evaluation.sums import TRACE_PREFIX, Evaluated, Sums, joined
from rides.stream.evaluation.waiting import Packing, Waiting, pack, packed, unpack
from rides.stream.events import RideCompleted
from rides.stream.failures import Failure, StoreUnavailable
from rides.stream.kinesis_batch import as_deadline
from rides.stream.retry import Backoff, error_code, is_retryable

MAX_ACTIONS = 100  # TransactWriteItems' limit
# A waiting item part of whose rides are ready is rewritten without them only after this long:
# before, the sweep waits for the rest (they came in one batch, and are decided at about the
# same time).
RESOLVE_PARTIAL_AFTER_SECONDS = 120.0
SWEEP_READ_ITEMS = 10  # waiting items whose rides one BatchGetItem reads (100 keys)

Position = tuple[int, int]  # (sequence number, sub-sequence number) in a shard


@dataclass
class CountOutcome:
    evaluated: list[Evaluated] = field(default_factory=list)  # pairs counted now
    waiting: int = 0  # completions left for the sweep (their ride was not decided yet)
    repeated: int = 0  # completions counted before (at or before the shard's mark)
    failed: dict[int, str] = field(default_factory=dict)  # index in the given list → error code


@dataclass
class SweepOutcome:
    evaluated: list[Evaluated] = field(default_factory=list)
    resolved: int = 0  # waiting completions joined now
    expired: int = 0  # waiting completions whose ride never got a decision within the window
    waiting: int = 0  # still waiting
    conflicts: int = 0  # waiting items someone else resolved meanwhile
    not_due: int = 0  # waiting items not read this time (EvaluationStore.due)


def _position_text(position: Position) -> str:
    return f"{position[0]}/{position[1]}"


def _position_of(text: str) -> Position:
    sequence, sub = text.split("/")
    return int(sequence), int(sub)


class EvaluationStore:
    def __init__(
        self,
        client,
        table_name: str,
        *,
        decisions_table: str | None = None,
        window_seconds: float = 2 * 86400,
        evaluated_models: Sequence[str] = (),
        shadow_models: Sequence[str] = (),
        join_wait_seconds: float = 900.0,
        sweep_interval_seconds: float = 60.0,
        backoff=Backoff,
    ):
        self.client = client
        self.table_name = table_name
        self.decisions = DecisionStore(client, decisions_table) if decisions_table else None
        self.window_seconds = window_seconds
        self.evaluated_models = tuple(evaluated_models)
        self.shadow_models = tuple(shadow_models)
        self.join_wait_seconds = join_wait_seconds
        self.sweep_interval_seconds = sweep_interval_seconds
        self.backoff = backoff

    def ready(self, ride: RideState | None, entry: Waiting, now: float) -> bool:
        """Whether a completion can be counted: its ride is decided, and every evaluated model
        and every challenger in the shadow has predicted it, or has had `join_wait_seconds`
        to. Consumers read the events on their own mappings: one that lags can predict after
        a timeout decision, and a ride is counted once, so a prediction stored after it would
        never be compared."""
        if ride is None or ride.decision is None:
            return False
        if all(m in ride.predictions for m in self.evaluated_models) and all(
            m in ride.shadow for m in self.shadow_models
        ):
            return True
        return now - entry.since >= self.join_wait_seconds

    def due(self, entries: Sequence[Waiting], now: float) -> bool:
        """Whether a sweep reads a waiting item's rides now: once as its age passes each of 1, 2,
        4, 8… sweep intervals, not at every sweep. A ride whose decision is late (a consumer down
        for an hour) was read again every interval for as long; this way a few times. A probe
        ride's item (the smoke test waits for it) and one past the window (to expire it): always."""
        if any(entry.ride_id.startswith(TRACE_PREFIX) for entry in entries):
            return True
        interval = self.sweep_interval_seconds
        age = now - min(entry.since for entry in entries)
        if interval <= 0 or age >= self.window_seconds:
            return True
        if age < interval:  # it was read when it came
            return False
        checkpoint = interval * 2 ** math.floor(math.log2(age / interval))
        return checkpoint > age - interval  # passed since the previous sweep

    # -- counting completions -----------------------------------------------------------------
    def add(
        self,
        shard: str,
        completions: Sequence[tuple[Position | None, RideCompleted]],
        *,
        now: float,
        time_left: Callable[[], float] | None = None,
    ) -> CountOutcome:
        """Join a shard's completions (in stream order, each with its position) with their
        rides' predictions and add them to the sums, exactly once. `shard`: `<stream>#<shard
        id>`. A completion whose ride is not decided yet waits for the sweep. → what was
        counted, and the completions (by index) whose records must be retried."""
        deadline = as_deadline(time_left)
        outcome = CountOutcome()
        left = list(enumerate(completions))  # not counted yet, in order
        for _read in range(3):  # the mark moved under us: read it again (never in normal operation)
            try:
                mark = self._mark(shard)
                todo = [(i, pos, c) for i, (pos, c) in left if pos is None or mark is None or pos > mark]
                outcome.repeated += len(left) - len(todo)
                rides = self._rides([c.ride_id for _, _, c in todo], deadline)
            except StoreUnavailable as exc:
                outcome.failed = {i: exc.code for i, _ in left}
                return outcome
            left = [(i, (pos, c)) for i, pos, c in todo]
            moved = False
            for chunk, sums, pairs, waiting in self._chunks(shard, todo, rides, now):
                actions = sums.actions(self.table_name, now)
                positions = [pos for _, pos, _ in chunk if pos is not None]
                first = 0
                for group in packed(shard, [entry for _, entry in waiting]):
                    actions.append(self._waiting_put(shard, waiting[first][0], group))
                    first += len(group)
                if positions:
                    actions.append(self._mark_put(shard, mark, positions[-1]))
                code = self._transact(actions, deadline)
                if code == Failure.CONFLICT:  # only the mark has a condition here
                    moved = True
                    break
                if code is not None:  # this chunk and every later one go with the retry
                    outcome.failed = {i: code for i, _ in left}
                    return outcome
                mark = positions[-1] if positions else mark
                outcome.evaluated += pairs
                outcome.waiting += len(waiting)
                counted = {i for i, _, _ in chunk}
                left = [(i, item) for i, item in left if i not in counted]
            if not moved:
                return outcome
        outcome.failed = {i: "MarkMoved" for i, _ in left}
        return outcome

    def _chunks(self, shard: str, todo, rides: dict[str, RideState], now: float):
        """Consecutive completions whose writes fit one transaction, joined: (chunk, sums,
        pairs, waiting completions)."""
        chunk: list = []
        sums, pairs, waiting, packing = Sums(), [], [], Packing(shard)
        seen: set[str] = set()
        for i, pos, completion in todo:
            if completion.ride_id in seen:  # sent twice in one batch: counted once (it moves the mark)
                chunk.append((i, pos, completion))
                continue
            seen.add(completion.ride_id)
            entry = Waiting.of(completion, now)
            ride = rides.get(completion.ride_id)
            found = joined(ride, entry, now) if self.ready(ride, entry, now) else None
            # this chunk's items with it: its sums, the mark, and its waiting items
            items = len(packing.groups) if found is not None else packing.items_with(entry)
            needed = sums.keys_after(found or []) + 1 + items
            if chunk and needed > MAX_ACTIONS:
                yield chunk, sums, pairs, waiting
                chunk, sums, pairs, waiting, packing = [], Sums(), [], [], Packing(shard)
            chunk.append((i, pos, completion))
            if found is None:
                waiting.append((pos, entry))
                packing.add(entry)
            else:
                sums.add(found)
                pairs += found
        if chunk:
            yield chunk, sums, pairs, waiting

    def _rides(self, ride_ids: Sequence[str], deadline) -> dict[str, RideState]:
        if self.decisions is None or not ride_ids:
            return {}
        try:
            return self.decisions.get_many(ride_ids, deadline, consistent=False)
        except StoreUnavailable as exc:
            raise StoreUnavailable(exc.code, f"reading the rides' predictions: {exc}") from exc

    def _mark(self, shard: str) -> Position | None:
        try:
            item = self.client.get_item(
                TableName=self.table_name,
                Key={"pk": {"S": "mark"}, "sk": {"S": shard}},
                ConsistentRead=True,
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(error_code(exc), f"reading the mark of {shard}: {exc}") from exc
        return _position_of(item["position"]["S"]) if item else None

    def _mark_put(self, shard: str, before: Position | None, after: Position) -> dict:
        put = {
            "TableName": self.table_name,
            "Item": {"pk": {"S": "mark"}, "sk": {"S": shard}, "position": {"S": _position_text(after)}},
        }
        if before is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "#p = :before"
            put["ExpressionAttributeNames"] = {"#p": "position"}
            put["ExpressionAttributeValues"] = {":before": {"S": _position_text(before)}}
        return {"Put": put}

    def _waiting_put(self, shard: str, first: Position | None, waiting: list[Waiting]) -> dict:
        sk = f"{shard}#{_position_text(first) if first else time.time_ns()}"
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    "pk": {"S": "waiting"},
                    "sk": {"S": sk},
                    **pack(waiting),
                    "version": {"N": "1"},
                },
            }
        }

    def _transact(self, actions: list[dict], deadline) -> str | None:
        """One transaction, again with backoff while it is throttled or races another one.
        → None when written, Failure.CONFLICT when one of its conditions failed, else the code."""
        if not actions:
            return None
        backoff = self.backoff(time_left=deadline)
        while True:
            if deadline.passed:
                return Failure.DEADLINE_PASSED
            try:
                self.client.transact_write_items(TransactItems=actions)
                return None
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                response = getattr(exc, "response", None) or {}
                reasons = {r.get("Code") for r in response.get("CancellationReasons", [])} - {None, "None"}
                if "ConditionalCheckFailed" in reasons:
                    return Failure.CONFLICT
                # two transactions on one sums item at once: DynamoDB cancels one; it goes again
                racing = code == "TransactionCanceledException" and reasons <= {
                    "TransactionConflict",
                    "ThrottlingError",
                }
                if not (racing or is_retryable(exc)):
                    return code
                if not backoff.wait():
                    return Failure.RETRIES_EXHAUSTED

    # -- the sweep: completions that came before their ride's decision -------------------------
    def sweep(self, *, now: float, time_left: Callable[[], float] | None = None) -> SweepOutcome:
        """Join the waiting completions again; count those whose ride is decided now, drop those
        older than the window (their ride never got a decision: counted in `expired`). Many
        waiting items resolve in one transaction: the sums' updates, the transaction's fixed
        cost, are shared by up to ~90 items' rewrites instead of paid for each ten rides."""
        deadline = as_deadline(time_left)
        out = SweepOutcome()
        sums, group = Sums(), []  # group: (item, entries, keep, pairs, expired) to write together

        def flush() -> None:
            nonlocal sums, group
            if not group:
                return
            actions = [*sums.actions(self.table_name, now), *(self._waiting_rewrite(g[0], g[2]) for g in group)]
            code = self._transact(actions, deadline)
            for _item, entries, keep, pairs, expired in group:
                if code is None:
                    out.evaluated += [e for found in pairs for e in found]
                    out.resolved += len(pairs)
                    out.expired += expired
                    out.waiting += len(keep)
                else:  # resolved by a sweep racing this one, or not written: the next sweep looks again
                    out.waiting += len(entries)
            out.conflicts += code == Failure.CONFLICT
            sums, group = Sums(), []

        due = []  # (item, its completions), unpacked once
        for item in self._query("waiting"):
            entries = unpack(item)
            if self.due(entries, now):
                due.append((item, entries))
            else:
                out.waiting += len(entries)
                out.not_due += 1
        for first in range(0, len(due), SWEEP_READ_ITEMS):
            page = due[first : first + SWEEP_READ_ITEMS]
            if deadline.passed:
                out.waiting += sum(len(entries) for _, entries in page)
                continue
            try:
                rides = self._rides([w.ride_id for _, entries in page for w in entries], deadline)
            except StoreUnavailable:
                out.waiting += sum(len(entries) for _, entries in page)
                continue
            for item, entries in page:
                mine, pairs, keep, expired = Sums(), [], [], 0
                for entry in entries:
                    ride = rides.get(entry.ride_id)
                    if self.ready(ride, entry, now):
                        found = joined(ride, entry, now)
                        if mine.keys_after(found) + 1 <= MAX_ACTIONS:  # + the waiting item
                            mine.add(found)
                            pairs.append(found)
                            continue
                    if now - entry.since > self.window_seconds:
                        expired += 1
                        continue
                    keep.append(entry)
                if not pairs and not expired:
                    out.waiting += len(keep)
                    continue
                young = now - min(entry.since for entry in entries) < RESOLVE_PARTIAL_AFTER_SECONDS
                probe = any(found[0].ride_id.startswith(TRACE_PREFIX) for found in pairs if found)
                if keep and not expired and young and not probe:  # the rest is likely decided soon
                    out.waiting += len(entries)
                    continue
                flat = [e for found in pairs for e in found]
                if sums.keys_after(flat) + len(group) + 1 > MAX_ACTIONS:
                    flush()
                sums.add(flat)
                group.append((item, entries, keep, pairs, expired))
        flush()
        return out

    def _waiting_rewrite(self, item: dict, keep: list[Waiting]) -> dict:
        key = {"pk": item["pk"], "sk": item["sk"]}
        condition = {
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": item["version"]},
        }
        if not keep:
            return {"Delete": {"TableName": self.table_name, "Key": key, **condition}}
        new = {**key, **pack(keep), "version": {"N": str(int(item["version"]["N"]) + 1)}}
        return {"Put": {"TableName": self.table_name, "Item": new, **condition}}

    # -- reading --------------------------------------------------------------------------------
    def versions(self) -> list[tuple[str, str, str]]:
        """(model, version, role) of everything evaluated (within the sums' TTL)."""
        return sorted({tuple(item["sk"]["S"].split("#")[:3]) for item in self._query("sums")})

    def hours(self, model: str, version: str, role: str) -> dict[str, Summary]:
        """Drop-off hour → the figures of a model version in a role."""
        out = {}
        for item in self._query("sums", f"{model}#{version}#{role}#"):
            hour = item["sk"]["S"].rsplit("#", 1)[1]
            out[hour] = Summary(int(_n(item, "n")), _n(item, "se"), _n(item, "sse"), _n(item, "sae"))
        return dict(sorted(out.items()))

    def summary(self, model: str, version: str, role: str) -> Summary:
        return Summary.total(self.hours(model, version, role).values())

    def count(self, model: str, version: str, role: str) -> int:
        """How many rides a model version in a role was evaluated on."""
        return self.summary(model, version, role).count

    def paired(self, model: str, challenger: str, incumbent: str) -> tuple[Summary, Summary]:
        """Both versions' figures on the rides both predicted (the challenger as the shadow)."""
        mine, theirs = [], []
        for item in self._query("paired", f"{model}#{challenger}#{incumbent}#"):
            n = int(_n(item, "n"))
            mine.append(Summary(n, _n(item, "c_se"), _n(item, "c_sse"), _n(item, "c_sae")))
            theirs.append(Summary(n, _n(item, "i_se"), _n(item, "i_sse"), _n(item, "i_sae")))
        return Summary.total(mine), Summary.total(theirs)

    def trace(self, ride_id: str) -> list[Evaluated] | None:
        """What was joined for a probe ride (TRACE_PREFIX), or None before it was."""
        item = self.client.get_item(
            TableName=self.table_name, Key={"pk": {"S": "trace"}, "sk": {"S": ride_id}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return [
            Evaluated(ride_id, model, version, role, field, predicted, actual, "")
            for model, version, role, field, predicted, actual in json.loads(item["pairs"]["S"])
        ]

    def waiting(self) -> int:
        """How many completions wait for their ride's decision."""
        return sum(len(unpack(item)) for item in self._query("waiting"))

    def _query(self, pk: str, prefix: str | None = None) -> list[dict]:
        condition = "pk = :pk" + (" AND begins_with(sk, :prefix)" if prefix else "")
        values = {":pk": {"S": pk}, **({":prefix": {"S": prefix}} if prefix else {})}
        items, start = [], None
        while True:
            kwargs = {"ExclusiveStartKey": start} if start else {}
            page = self.client.query(
                TableName=self.table_name, KeyConditionExpression=condition, ExpressionAttributeValues=values, **kwargs
            )
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items


def _n(item: dict, name: str) -> float:
    value = item.get(name)
    return float(value["N"]) if value else 0.0
