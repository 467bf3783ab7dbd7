"""The evaluation consumer: one function on two streams, and a sweep.

- `ride-completions`: each ride's outcome joined with the predictions the decision service
  stored for the ride (production's and a challenger's), the errors added to running sums per
  model, version, role and hour, exactly once (rides.stream.evaluation.store), and
  emitted as metrics. A completion that comes before its ride's decision waits; the sweep
  (a schedule on AWS, every 15 s locally) joins it once the ride is decided.
- `ride-events`: each input feature's distribution this hour against the training data's, and
  the production model's joined predictions' (rides.stream.evaluation.drift).

Which stream a record came from is read from its content (a ride event has `ride`, a
completion `"type": "ride-completed"`), so the local runner and Lambda's mappings call the same
handler the same way. A prediction record (the function was mapped to `ride-predictions`
before the join read the decisions table) is done as it is; a record none of these can read is
a dead letter.
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
from rides.stream.evaluation.store import EvaluationStore
from rides.stream.evaluation.sums import Evaluated
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
from rides.stream.kinesis_batch import BatchCounts, BatchRecord, KinesisBatch, PartialBatchResponse, as_deadline

log = logging.getLogger("rides.stream.evaluation")


@dataclass(frozen=True)
class EvaluationConfig:
    table_name: str
    decisions_table: str | None = None  # where the rides' predictions are (the decision service's table)
    dead_letter_queue_url: str | None = None
    window_seconds: float = 48 * 3600
    drift_reference_uri: str | None = None  # the production model, whose training data is the reference
    drift_model: str = "ride-duration"  # whose production predictions are compared with that reference
    # The models whose predictions a ride's outcome is compared with: production's (the
    # consumers') and the challengers' in the shadow. A decided ride is counted once its item
    # has all of them (a lagging consumer's prediction can come after a timeout decision), or
    # when the wait has passed.
    evaluated_models: tuple[str, ...] = ()
    shadow_models: tuple[str, ...] = ()
    join_wait_seconds: float = 900.0
    # How often the schedule sweeps (Terraform: rate(1 minute)); a waiting completion's ride is
    # read again at about 1, 2, 4, 8… intervals of its age (EvaluationStore.due).
    sweep_interval_seconds: float = 60.0

    ENV_VARS = (
        "EVALUATIONS_TABLE",
        "DECISIONS_TABLE",
        "DEAD_LETTER_QUEUE_URL",
        "EVALUATION_WINDOW_HOURS",
        "DRIFT_REFERENCE_URI",
        "DRIFT_MODEL",
        "EVALUATED_MODELS",
        "SHADOW_MODELS",
        "JOIN_WAIT_SECONDS",
        "SWEEP_INTERVAL_SECONDS",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EvaluationConfig:
        return cls(
            table_name=env.get("EVALUATIONS_TABLE") or "ride-evaluations",
            decisions_table=env.get("DECISIONS_TABLE") or "ride-decisions",
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            window_seconds=float(env.get("EVALUATION_WINDOW_HOURS") or 48) * 3600,
            drift_reference_uri=env.get("DRIFT_REFERENCE_URI") or None,
            drift_model=env.get("DRIFT_MODEL") or "ride-duration",
            evaluated_models=_names(env.get("EVALUATED_MODELS")),
            shadow_models=_names(env.get("SHADOW_MODELS")),
            join_wait_seconds=float(env.get("JOIN_WAIT_SECONDS") or 900),
            sweep_interval_seconds=float(env.get("SWEEP_INTERVAL_SECONDS") or 60),
        )

    def store(self, client) -> EvaluationStore:
        return EvaluationStore(
            client,
            self.table_name,
            decisions_table=self.decisions_table,
            window_seconds=self.window_seconds,
            evaluated_models=self.evaluated_models,
            shadow_models=self.shadow_models,
            join_wait_seconds=self.join_wait_seconds,
            sweep_interval_seconds=self.sweep_interval_seconds,
        )


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


@dataclass
class EvaluationReport(BatchCounts):
    records: int = 0
    predictions: int = 0
    completions: int = 0
    ride_events: int = 0
    evaluated: list[Evaluated] = field(default_factory=list)  # pairs evaluated by this batch
    waiting: int = 0  # completions that came before their ride's decision (the sweep joins them)
    repeated: int = 0  # completions counted before (a redelivery)
    drift: dict[str, float] = field(default_factory=dict)  # feature or "prediction" → PSI this hour

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
    completions = [i for i in items if isinstance(i.value, RideCompleted)]
    rides = [i for i in items if isinstance(i.value, RideEvent)]
    report.completions, report.ride_events = len(completions), len(rides)
    report.predictions = sum(isinstance(i.value, PredictionIn) for i in items)

    by_shard: dict[str, list[BatchRecord]] = {}
    for item in completions:
        by_shard.setdefault(f"{batch.stream_name(item)}#{item.shard_id}", []).append(item)
    for shard, shard_items in by_shard.items():
        try:
            outcome = store.add(shard, [(_position(i), i.value) for i in shard_items], now=now, time_left=deadline)
        except Exception as exc:  # a bug, or the table refuses us in a way we do not know: retried
            batch.log_unexpected(exc, "counting completions", shard_items)
            batch.report(shard_items, type(exc).__name__)
            continue
        report.evaluated += outcome.evaluated
        report.waiting += outcome.waiting
        report.repeated += outcome.repeated
        for index, code in outcome.failed.items():
            batch.report([shard_items[index]], code)

    if drift is not None:
        report.drift = _drift(drift, rides, report.evaluated, config, now, logger or log)

    return report.settle(batch.finish(dead_letters, deadline)), report


def sweep(
    config: EvaluationConfig,
    *,
    store: EvaluationStore,
    drift: DriftCounter | None = None,
    time_left: Callable[[], float] | None = None,
    clock: Callable[[], float] = time.time,
    logger: logging.Logger | None = None,
) -> EvaluationReport:
    """Join the completions that came before their ride's decision (the scheduled invocation)."""
    now = clock()
    outcome = store.sweep(now=now, time_left=time_left)
    report = EvaluationReport(evaluated=outcome.evaluated, waiting=outcome.waiting)
    if outcome.expired:
        (logger or log).warning(
            "%d completions dropped: their ride had no decision within %g h",
            outcome.expired,
            config.window_seconds / 3600,
        )
    if drift is not None and outcome.evaluated:
        report.drift = _drift(drift, [], outcome.evaluated, config, now, logger or log)
    return report


def _position(item: BatchRecord) -> tuple[int, int] | None:
    """Where a record is in its shard: (sequence number, sub-sequence number)."""
    if not item.sequence_number:
        return None
    return int(item.sequence_number), item.sub_sequence_number or 0


def _drift(
    drift: DriftCounter, rides, evaluated: Sequence[Evaluated], config: EvaluationConfig, now: float, logger
) -> dict[str, float]:
    """This hour's PSI per feature (from the ride events) and of the production predictions
    (those joined now). A failure here costs a statistic, not a record: logged, not retried."""
    values: dict[str, np.ndarray] = {}
    if rides:
        features = features_from_events([i.value for i in rides])
        values.update({name: column for name, column in features.columns.items()})
    production = [e.predicted for e in evaluated if e.model == config.drift_model and e.role == "production"]
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
