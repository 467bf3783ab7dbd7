"""The decision service: gathers each ride's predictions (duration, fare, tip; in any order,
possibly duplicated), and once the set is complete or a timeout passes, applies rules and
publishes one decision record to `ride-decisions`.

Storage is a DynamoDB item per ride: one attribute per model, `models` (a string set of the
models seen), `first_seen`, and `pending` (indexed, sparse) until the decision is made.
Same failure rules as the consumer: dead letters for bad records, partial batch responses for
what may succeed later, duplicates absorbed (a model's prediction is overwritten by itself;
a decision is written once, conditionally, and published until marked published).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from rides.deadletter import DeadLetter, DeadLetterSink
from rides.events import InvalidEvent, decode_data, json_bytes
from rides.publish import KinesisPublisher

PENDING_INDEX = "pending-index"
DEFAULT_REQUIRED_MODELS = ("ride-duration", "ride-fare", "ride-tip")
DEFAULT_RULES = (
    {"flag": "long_ride", "type": "max", "field": "ride_duration", "value": 45},
    {
        "flag": "fare_per_minute_out_of_range",
        "type": "ratio_range",
        "numerator": "fare_amount",
        "denominator": "ride_duration",
        "min": 0.4,
        "max": 4.0,
    },
    {
        "flag": "tip_share_out_of_range",
        "type": "ratio_range",
        "numerator": "tip_amount",
        "denominator": "fare_amount",
        "min": 0.0,
        "max": 0.4,
    },
)


# -- rules ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """`max`/`min`: flag when `field` is above/below `value`; `ratio_range`: flag when
    numerator / denominator falls outside [min, max]. Missing fields: not evaluated."""

    flag: str
    type: str
    field: str | None = None
    value: float | None = None
    numerator: str | None = None
    denominator: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self):
        needs = {
            "max": ("field", "value"),
            "min": ("field", "value"),
            "ratio_range": ("numerator", "denominator", "min", "max"),
        }
        if self.type not in needs:
            raise ValueError(f"rule {self.flag!r}: type must be one of {sorted(needs)}, got {self.type!r}")
        missing = [name for name in needs[self.type] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"rule {self.flag!r} ({self.type}) needs {missing}")

    def fires(self, values: Mapping[str, float]) -> bool | None:
        """True/False, or None when the rule cannot be evaluated (a prediction is missing)."""
        if self.type in ("max", "min"):
            if self.field not in values:
                return None
            value = values[self.field]
            return value > self.value if self.type == "max" else value < self.value
        if self.numerator not in values or self.denominator not in values or values[self.denominator] == 0:
            return None
        ratio = values[self.numerator] / values[self.denominator]
        return not (self.min <= ratio <= self.max)


def load_rules(spec: str | None) -> tuple[Rule, ...]:
    """DECISION_RULES: a JSON list of rules, or a path to a JSON file; default DEFAULT_RULES."""
    if not spec:
        return tuple(Rule(**rule) for rule in DEFAULT_RULES)
    text = open(spec).read() if not spec.lstrip().startswith("[") else spec  # noqa: SIM115
    return tuple(Rule(**rule) for rule in json.loads(text))


def evaluate(values: Mapping[str, float], rules: Sequence[Rule]) -> tuple[list[str], list[str]]:
    """→ (flags raised, rules not evaluated for lack of a prediction)."""
    flags, skipped = [], []
    for rule in rules:
        fired = rule.fires(values)
        if fired is None:
            skipped.append(rule.flag)
        elif fired:
            flags.append(rule.flag)
    return flags, skipped


# -- input ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictionIn:
    ride_id: str
    model: str
    version: str
    field: str
    value: float
    source: dict


def parse_prediction(data: str) -> PredictionIn:
    """A prediction record (the consumer's output contract), or InvalidEvent with the reason."""
    body = decode_data(data)
    if not isinstance(body, dict):
        raise InvalidEvent("prediction record must be a JSON object")
    model, prediction = body.get("model"), body.get("prediction")
    if not isinstance(model, str) or not model:
        raise InvalidEvent("model must be a non-empty string")
    if not isinstance(prediction, dict):
        raise InvalidEvent("prediction must be a JSON object")
    ride_id = prediction.get("ride_id")
    if isinstance(ride_id, bool) or not isinstance(ride_id, str | int) or ride_id == "":
        raise InvalidEvent("prediction.ride_id must be a non-empty string or an integer")
    values = [(k, v) for k, v in prediction.items() if k != "ride_id"]
    if len(values) != 1:
        raise InvalidEvent(f"prediction must hold ride_id and exactly one value, got {sorted(prediction)}")
    field_name, value = values[0]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent(f"prediction.{field_name} must be a finite number")
    source = body.get("source") if isinstance(body.get("source"), dict) else {}
    return PredictionIn(str(ride_id), model, str(body.get("version", "")), field_name, float(value), source)


# -- configuration ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecisionConfig:
    table_name: str
    decisions_stream_name: str
    dead_letter_queue_url: str | None = None
    required_models: tuple[str, ...] = DEFAULT_REQUIRED_MODELS
    timeout_seconds: float = 60.0
    retention_days: int = 7
    rules: tuple[Rule, ...] = field(default_factory=lambda: load_rules(None))

    ENV_VARS = (
        "DECISIONS_TABLE",
        "DECISIONS_STREAM_NAME",
        "DEAD_LETTER_QUEUE_URL",
        "REQUIRED_MODELS",
        "DECISION_TIMEOUT_SECONDS",
        "DECISION_RULES",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DecisionConfig:
        required = tuple(m.strip() for m in env.get("REQUIRED_MODELS", "").split(",") if m.strip())
        return cls(
            table_name=env.get("DECISIONS_TABLE") or "ride-decisions",
            decisions_stream_name=env.get("DECISIONS_STREAM_NAME") or "ride-decisions",
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            required_models=required or DEFAULT_REQUIRED_MODELS,
            timeout_seconds=float(env.get("DECISION_TIMEOUT_SECONDS") or 60),
            rules=load_rules(env.get("DECISION_RULES")),
        )


# -- storage ----------------------------------------------------------------------------------------
def _number(value: float) -> Decimal:
    return Decimal(repr(float(value)))


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


class DecisionStore:
    """The DynamoDB side (a boto3 Table resource)."""

    def __init__(self, table, retention_days: int = 7):
        self.table = table
        self.retention_seconds = retention_days * 86400

    def record(self, prediction: PredictionIn, now: float) -> dict:
        """Store one model's prediction for a ride; returns the whole item afterwards."""
        response = self.table.update_item(
            Key={"ride_id": prediction.ride_id},
            UpdateExpression=(
                "SET #m = :p, first_seen = if_not_exists(first_seen, :now), "
                "expires_at = if_not_exists(expires_at, :exp), "
                "pending = if_not_exists(pending, :pending) ADD models :model"
            ),
            ExpressionAttributeNames={"#m": f"prediction:{prediction.model}"},
            ExpressionAttributeValues={
                ":p": {
                    "field": prediction.field,
                    "value": _number(prediction.value),
                    "version": prediction.version,
                    "sequence_number": str(prediction.source.get("sequence_number") or ""),
                },
                ":now": _number(now),
                ":exp": int(now + self.retention_seconds),
                ":pending": "1",
                ":model": {prediction.model},
            },
            ReturnValues="ALL_NEW",
        )
        item = response["Attributes"]
        if "decision" in item and "pending" in item:  # a late prediction: nothing left to wait for
            self.table.update_item(Key={"ride_id": prediction.ride_id}, UpdateExpression="REMOVE pending")
            del item["pending"]
        return item

    def decide(self, ride_id: str, decision: dict) -> dict:
        """Write the decision once; a later (duplicate or racing) call gets the stored one."""
        from botocore.exceptions import ClientError

        try:
            response = self.table.update_item(
                Key={"ride_id": ride_id},
                UpdateExpression="SET decision = :d REMOVE pending",
                ConditionExpression="attribute_not_exists(decision)",
                ExpressionAttributeValues={":d": json.loads(json.dumps(decision), parse_float=Decimal)},
                ReturnValues="ALL_NEW",
            )
            return response["Attributes"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        return self.table.get_item(Key={"ride_id": ride_id}, ConsistentRead=True)["Item"]

    def mark_published(self, ride_id: str) -> None:
        self.table.update_item(
            Key={"ride_id": ride_id},
            UpdateExpression="SET decision_published = :t",
            ExpressionAttributeValues={":t": True},
        )

    def pending_before(self, cutoff: float) -> list[str]:
        """Rides still waiting for predictions since before `cutoff` (the sparse index)."""
        from boto3.dynamodb.conditions import Key

        rides, kwargs = [], {}
        while True:
            page = self.table.query(
                IndexName=PENDING_INDEX,
                KeyConditionExpression=Key("pending").eq("1") & Key("first_seen").lt(_number(cutoff)),
                **kwargs,
            )
            rides += [item["ride_id"] for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return rides
            kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def get(self, ride_id: str) -> dict | None:
        return self.table.get_item(Key={"ride_id": ride_id}, ConsistentRead=True).get("Item")


def make_decision(item: dict, config: DecisionConfig, reason: str, now: float) -> dict:
    """The decision record for a stored ride item."""
    predictions = {
        key.removeprefix("prediction:"): _plain(value) for key, value in item.items() if key.startswith("prediction:")
    }
    values = {p["field"]: p["value"] for p in predictions.values()}
    flags, not_evaluated = evaluate(values, config.rules)
    return {
        "ride_id": item["ride_id"],
        "decision": "review" if flags else "accept",
        "flags": flags,
        "not_evaluated": not_evaluated,
        "complete": all(model in predictions for model in config.required_models),
        "reason": reason,
        "predictions": {
            model: {"field": p["field"], "value": p["value"], "version": p["version"]}
            for model, p in sorted(predictions.items())
        },
        "decided_at": now,
    }


# -- processing -------------------------------------------------------------------------------------
@dataclass
class DecisionReport:
    records: int = 0
    stored: int = 0
    decided: int = 0
    published: int = 0
    dead_lettered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def _finish(store: DecisionStore, publisher: KinesisPublisher, items: list[dict], time_left) -> list[int]:
    """Publish the decisions of items not yet marked published; → indices that failed."""
    todo = [(i, item) for i, item in enumerate(items) if not item.get("decision_published")]
    if not todo:
        return []
    records = [(item["ride_id"], json_bytes(_plain(item["decision"]))) for _, item in todo]
    result = publisher.publish(records, time_left)
    unpublished = set(result.failed)
    for position, (_, item) in enumerate(todo):
        if position not in unpublished:
            store.mark_published(item["ride_id"])
    failed = {todo[position][0] for position in unpublished}
    return sorted(failed)


def process_predictions(
    records: Sequence[Mapping],
    config: DecisionConfig,
    *,
    store: DecisionStore,
    publisher: KinesisPublisher,
    dead_letters: DeadLetterSink,
    time_left: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[dict, DecisionReport]:
    clock = clock or time.time  # looked up per call, so tests can move time
    report = DecisionReport(records=len(records))
    retry: list[str] = []
    letters: list[tuple[str, DeadLetter]] = []
    decided_items: list[tuple[str, dict]] = []
    for record in records:
        kinesis = record.get("kinesis") or {}
        sequence = kinesis.get("sequenceNumber")
        source = {"shard_id": str(record.get("eventID", "")).split(":", 1)[0], "sequence_number": sequence}
        try:
            prediction = parse_prediction(kinesis.get("data", ""))
        except InvalidEvent as exc:
            letters.append((sequence, DeadLetter(str(exc), kinesis.get("data", ""), source)))
            continue
        try:
            item = store.record(prediction, clock())
            report.stored += 1
            if set(item.get("models", ())) >= set(config.required_models) and "decision" not in item:
                item = store.decide(prediction.ride_id, make_decision(item, config, "complete", clock()))
                report.decided += 1
            if "decision" in item and not item.get("decision_published"):
                decided_items.append((sequence, item))
        except Exception as exc:
            report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
            retry.append(sequence)
    # The same ride may have been decided by two records of this batch: publish it once.
    unique: dict[str, tuple[str, dict]] = {}
    for sequence, item in decided_items:
        unique.setdefault(item["ride_id"], (sequence, item))
    pairs = list(unique.values())
    failed = _finish(store, publisher, [item for _, item in pairs], time_left)
    report.published = len(pairs) - len(failed)
    retry += [pairs[i][0] for i in failed]
    undelivered = dead_letters.send([letter for _, letter in letters], time_left)
    report.dead_lettered = len(letters) - len(undelivered)
    retry += [letters[i][0] for i in undelivered]
    failures = sorted({s for s in retry if s}, key=lambda s: (len(s), s))
    report.failed = len(failures)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in failures]}, report


def sweep(
    config: DecisionConfig,
    *,
    store: DecisionStore,
    publisher: KinesisPublisher,
    clock: Callable[[], float] | None = None,
    time_left: Callable[[], float] | None = None,
) -> dict:
    """Decide the rides whose predictions stopped coming (timeout), and republish decisions
    whose publication failed earlier."""
    now = (clock or time.time)()
    items = []
    for ride_id in store.pending_before(now - config.timeout_seconds):
        item = store.get(ride_id)
        if item is None:
            continue
        if "decision" not in item:
            item = store.decide(ride_id, make_decision(item, config, "timeout", now))
        items.append(item)
    failed = _finish(store, publisher, items, time_left)
    return {"timed_out": len(items), "published": len(items) - len(failed), "failed": len(failed)}


def parse_item_for_api(item: dict) -> dict:
    """A stored ride as the web service returns it (GET /predictions/{ride_id})."""
    plain = _plain(item)
    predictions = {k.removeprefix("prediction:"): v for k, v in plain.items() if k.startswith("prediction:")}
    return {
        "ride_id": plain["ride_id"],
        "predictions": predictions,
        "decision": plain.get("decision"),
        "first_seen": plain.get("first_seen"),
    }
