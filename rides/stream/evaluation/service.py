"""The evaluation consumer: one function on three streams.

- `ride-predictions` and `ride-completions`: each prediction joined with its ride's outcome in
  the evaluations table (rides.stream.evaluation.store), in any order, duplicated or late
  within the window; every pair evaluated once, and its error emitted as metrics per model,
  version and role (production or shadow).
- `ride-events` (and the predictions): each input feature's (and the production model's
  predictions') distribution this hour against the training data's (rides.stream.evaluation.drift).

Which stream a record came from is read from its content (a ride event has `ride`, a
prediction `model`, a completion `"type": "ride-completed"`), so the local runner and Lambda's
mappings call the same handler the same way. A record none of these can read is a dead letter.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from rides.stream.deadletter import DeadLetterSink
from rides.stream.evaluation.drift import PREDICTION, DriftCounter
from rides.stream.evaluation.metrics import Summary
from rides.stream.evaluation.store import Evaluated, EvaluationStore, EvaluationUnavailable
from rides.stream.events import (
    COMPLETED,
    InvalidEvent,
    PredictionIn,
    RideCompleted,
    RideEvent,
    completion_from,
    decode_json,
    prediction_from,
    validate_event,
)
from rides.stream.features import features_from_events
from rides.stream.kinesis_batch import KinesisBatch, PartialBatchResponse, as_deadline

log = logging.getLogger("rides.stream.evaluation")


@dataclass(frozen=True)
class EvaluationConfig:
    table_name: str
    dead_letter_queue_url: str | None = None
    window_seconds: float = 48 * 3600
    drift_reference_uri: str | None = None  # the production model, whose training data is the reference
    drift_model: str = "ride-duration"  # whose production predictions are compared with that reference

    ENV_VARS = (
        "EVALUATIONS_TABLE",
        "DEAD_LETTER_QUEUE_URL",
        "EVALUATION_WINDOW_HOURS",
        "DRIFT_REFERENCE_URI",
        "DRIFT_MODEL",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EvaluationConfig:
        return cls(
            table_name=env.get("EVALUATIONS_TABLE") or "ride-evaluations",
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            window_seconds=float(env.get("EVALUATION_WINDOW_HOURS") or 48) * 3600,
            drift_reference_uri=env.get("DRIFT_REFERENCE_URI") or None,
            drift_model=env.get("DRIFT_MODEL") or "ride-duration",
        )


@dataclass
class EvaluationReport:
    records: int = 0
    predictions: int = 0
    completions: int = 0
    ride_events: int = 0
    evaluated: list[Evaluated] = field(default_factory=list)  # pairs evaluated by this batch
    drift: dict[str, float] = field(default_factory=dict)  # feature or "prediction" → PSI this hour
    dead_lettered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def summaries(self) -> dict[tuple[str, str, str], Summary]:
        """(model, version, role) → the figures of this batch's new pairs (the metrics)."""
        groups: dict[tuple[str, str, str], list[float]] = {}
        for e in self.evaluated:
            groups.setdefault((e.model, e.version, e.role), []).append(e.error)
        return {key: Summary.of(errors) for key, errors in groups.items()}


def parse_any(raw: bytes) -> PredictionIn | RideCompleted | RideEvent:
    """Whichever of the three contracts the record's data (raw bytes) holds."""
    body = decode_json(raw)
    if isinstance(body, dict):
        if body.get("type") == COMPLETED:
            return completion_from(body)
        if "model" in body:
            return prediction_from(body)
        if "ride" in body:
            return validate_event(body)
    raise InvalidEvent("neither a prediction, a ride-completed event nor a ride event")


def process_records(
    records: Sequence[Mapping],
    config: EvaluationConfig,
    *,
    store: EvaluationStore,
    drift: DriftCounter | None,
    dead_letters: DeadLetterSink,
    time_left: Callable[[], float] | None = None,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
) -> tuple[PartialBatchResponse, EvaluationReport]:
    now = clock()
    deadline = as_deadline(time_left)
    report = EvaluationReport(records=len(records))
    batch = KinesisBatch(records, logger=logger or log)
    items = batch.parse(parse_any)
    predictions = [i for i in items if isinstance(i.value, PredictionIn)]
    completions = [i for i in items if isinstance(i.value, RideCompleted)]
    rides = [i for i in items if isinstance(i.value, RideEvent)]
    report.predictions, report.completions, report.ride_events = len(predictions), len(completions), len(rides)

    if predictions or completions:
        try:
            evaluated, failed = store.record(
                [i.value for i in predictions], [i.value for i in completions], now=now, time_left=deadline
            )
        except EvaluationUnavailable as exc:
            evaluated, failed = [], {i.value.ride_id: exc.code for i in predictions + completions}
        except Exception as exc:  # the table is gone or refuses us: the whole join is retried
            batch.log_unexpected(exc, "storing predictions and outcomes", predictions + completions)
            evaluated, failed = [], {i.value.ride_id: type(exc).__name__ for i in predictions + completions}
        report.evaluated = evaluated
        for item in predictions + completions:
            if item.value.ride_id in failed:
                batch.report([item], failed[item.value.ride_id])

    if drift is not None:
        report.drift = _drift(drift, rides, predictions, config, now, logger or log)

    batch.send_dead_letters(dead_letters, deadline)
    report.dead_lettered = batch.dead_lettered
    report.errors.update(batch.errors)
    response = batch.response()
    report.failed = batch.failed
    return response, report


def _drift(drift: DriftCounter, rides, predictions, config: EvaluationConfig, now: float, logger) -> dict[str, float]:
    """This hour's PSI per feature (from the ride events) and of the production predictions.
    A failure here costs a statistic, not a record: logged, not retried."""
    values: dict[str, np.ndarray] = {}
    if rides:
        features = features_from_events([i.value for i in rides])
        values.update({name: column for name, column in features.columns.items()})
    production = [
        i.value.value for i in predictions if i.value.model == config.drift_model and i.value.role == "production"
    ]
    if production:
        values[PREDICTION] = np.asarray(production, dtype=np.float64)
    if not values:
        return {}
    hour = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H")
    try:
        return drift.add(hour, values, expires_at=int(now + 30 * 86400))
    except Exception as exc:
        logger.warning("drift counts not stored: %s: %s", type(exc).__name__, exc)
        return {}
