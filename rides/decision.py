"""The decision service: gathers each ride's predictions (duration, fare, tip; in any order,
possibly duplicated), and once the set is complete or a timeout passes, applies rules and
publishes one decision record to `ride-decisions`.

Storage is a DynamoDB item per ride: one attribute per model (`prediction:<model>`),
`first_seen`, `pending` (indexed, sparse) until the decision is made, then `decision` and
`decision_published`. Same failure rules as the consumer: dead letters for bad records,
partial batch responses for what may succeed later, duplicates absorbed (a prediction
overwrites itself; a decision is made once and published until marked published).
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
from rides.retry import Backoff

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
    """The DynamoDB side (a boto3 Table resource), in batches: BatchGetItem the rides of a
    Kinesis batch, merge in memory, BatchWriteItem them back.

    Single writer per ride: a ride's predictions share a partition key, so they arrive on one
    shard and are processed in order by one invocation at a time. The timeout sweep writes
    conditionally; if it races the stream processor, the worst case is a second (identical in
    substance) decision record, never a lost one.
    """

    def __init__(self, table, retention_days: int = 7, backoff: Callable[..., Backoff] = Backoff):
        self.table = table
        self.retention_seconds = retention_days * 86400
        self.backoff = backoff

    def get_many(self, ride_ids: Sequence[str]) -> dict[str, dict]:
        items: dict[str, dict] = {}
        ids = list(dict.fromkeys(ride_ids))
        for start in range(0, len(ids), 100):
            request = {
                self.table.name: {"Keys": [{"ride_id": r} for r in ids[start : start + 100]], "ConsistentRead": True}
            }
            backoff = self.backoff()
            while request:
                response = self.table.meta.client.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(self.table.name, []):
                    item = _from_dynamo(item)
                    items[item["ride_id"]] = item
                request = response.get("UnprocessedKeys") or {}
                if request and not backoff.wait():
                    raise RuntimeError(f"{len(request[self.table.name]['Keys'])} reads unprocessed")
        return items

    def put_many(self, items: Sequence[dict]) -> None:
        with self.table.batch_writer() as batch:  # chunks of 25, retries unprocessed items
            for item in items:
                batch.put_item(Item=_to_dynamo(item))

    def decide_once(self, item: dict) -> bool:
        """The sweep's write: only if nobody decided the ride meanwhile."""
        from botocore.exceptions import ClientError

        try:
            self.table.put_item(Item=_to_dynamo(item), ConditionExpression="attribute_not_exists(decision)")
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

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

    def expiry(self, now: float) -> int:
        return int(now + self.retention_seconds)


def _to_dynamo(item: dict) -> dict:
    return json.loads(json.dumps(item), parse_float=Decimal)


def _from_dynamo(item: dict) -> dict:
    return _plain(item)


def merge(item: dict | None, prediction: PredictionIn, now: float, expires_at: int) -> dict:
    """A ride's stored state with one more prediction (a duplicate changes nothing)."""
    item = dict(item or {"ride_id": prediction.ride_id, "first_seen": now, "pending": "1", "expires_at": expires_at})
    item[f"prediction:{prediction.model}"] = {
        "field": prediction.field,
        "value": prediction.value,
        "version": prediction.version,
        "sequence_number": str(prediction.source.get("sequence_number") or ""),
    }
    return item


def models_of(item: dict) -> set[str]:
    return {key.removeprefix("prediction:") for key in item if key.startswith("prediction:")}


def make_decision(item: dict, config: DecisionConfig, reason: str, now: float) -> dict:
    """The decision record for a stored ride item."""
    predictions = {
        key.removeprefix("prediction:"): value for key, value in item.items() if key.startswith("prediction:")
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


def with_decision(item: dict, decision: dict) -> dict:
    item = {k: v for k, v in item.items() if k != "pending"}  # nothing left to wait for
    item["decision"] = decision
    item["decision_published"] = False
    return item


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


def _publish(publisher: KinesisPublisher, items: list[dict], time_left) -> set[str]:
    """Publish the decisions of items not yet published; → ride ids whose publication failed."""
    todo = [item for item in items if "decision" in item and not item.get("decision_published")]
    if not todo:
        return set()
    result = publisher.publish([(item["ride_id"], json_bytes(item["decision"])) for item in todo], time_left)
    failed = {todo[i]["ride_id"] for i in result.failed}
    for item in todo:
        if item["ride_id"] not in failed:
            item["decision_published"] = True
    return failed


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
    now = (clock or time.time)()  # looked up per call, so tests can move time
    report = DecisionReport(records=len(records))
    letters: list[tuple[str, DeadLetter]] = []
    parsed: list[tuple[str, PredictionIn]] = []
    for record in records:
        kinesis = record.get("kinesis") or {}
        sequence = kinesis.get("sequenceNumber")
        source = {"shard_id": str(record.get("eventID", "")).split(":", 1)[0], "sequence_number": sequence}
        try:
            parsed.append((sequence, parse_prediction(kinesis.get("data", ""))))
        except InvalidEvent as exc:
            letters.append((sequence, DeadLetter(str(exc), kinesis.get("data", ""), source)))
    retry: list[str] = []
    try:
        items = store.get_many([p.ride_id for _, p in parsed])
        changed: dict[str, dict] = {}
        for _, prediction in parsed:
            before = items.get(prediction.ride_id)
            item = merge(before, prediction, now, store.expiry(now))
            if item != before:
                items[prediction.ride_id] = changed[prediction.ride_id] = item
                report.stored += 1
        for ride_id, item in list(items.items()):
            if "decision" not in item and models_of(item) >= set(config.required_models):
                items[ride_id] = changed[ride_id] = with_decision(item, make_decision(item, config, "complete", now))
                report.decided += 1
        unpublished = [item for item in items.values() if "decision" in item and not item.get("decision_published")]
        failed = _publish(publisher, unpublished, time_left)
        for item in unpublished:
            changed[item["ride_id"]] = item
        report.published = len(unpublished) - len(failed)
        store.put_many(list(changed.values()))
        retry += [sequence for sequence, p in parsed if p.ride_id in failed]
    except Exception as exc:
        report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
        retry += [sequence for sequence, _ in parsed]
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
    """Decide the rides whose predictions stopped coming (timeout)."""
    now = (clock or time.time)()
    items = store.get_many(store.pending_before(now - config.timeout_seconds))
    decided = []
    for item in items.values():
        if "decision" in item:
            continue
        candidate = with_decision(item, make_decision(item, config, "timeout", now))
        if store.decide_once(candidate):  # conditional: the stream processor may have decided it
            decided.append(candidate)
    failed = _publish(publisher, decided, time_left)
    store.put_many([item for item in decided if item["decision_published"]])
    return {"timed_out": len(decided), "published": len(decided) - len(failed), "failed": len(failed)}


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
