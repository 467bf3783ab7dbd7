"""A Kinesis batch → predictions → publish → partial batch response.

Every input record ends in exactly one place: published, dead-lettered (it can never
succeed), or reported in `batchItemFailures` (it may succeed on a later try).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from rides.stream.deadletter import DeadLetterSink
from rides.stream.events import ROLES, json_bytes, read_ride
from rides.stream.failures import Failure
from rides.stream.features import RideFeatures, features_from_events
from rides.stream.kinesis_batch import BatchCounts, BatchRecord, KinesisBatch, as_deadline
from rides.stream.model import LoadedModel, ModelLoadError, get_model
from rides.stream.publish import KinesisPublisher

log = logging.getLogger("rides.stream.consumer")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class ConsumerConfig:
    """What the consumer reads from its environment (the Terraform module sets exactly these)."""

    model_uri: str
    predictions_stream_name: str | None = None
    dead_letter_queue_url: str | None = None
    dry_run: bool = False
    model_name: str = "ride-duration"
    model_version: str | None = None
    prediction_field: str = "ride_duration"
    publish_concurrency: int = 4
    model_role: str = "production"  # "shadow": a challenger beside production (rides promote --as shadow)
    # Predictions KPL-aggregated on the stream (rides.stream.publish): a PUT payload unit per
    # 25 KB instead of one per prediction, and Firehose's 5 KB minimum per aggregate.
    publish_aggregated: bool = False

    # The variables, in one place: tests check the Terraform against this list.
    ENV_VARS = (
        "MODEL_URI",
        "MODEL_NAME",
        "MODEL_VERSION",
        "PREDICTION_FIELD",
        "PREDICTIONS_STREAM_NAME",
        "DEAD_LETTER_QUEUE_URL",
        "DRY_RUN",
        "PUBLISH_CONCURRENCY",
        "MODEL_ROLE",
        "PUBLISH_AGGREGATED",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ConsumerConfig:
        dry_run = env.get("DRY_RUN", "false").strip().lower() in TRUE_WORDS
        stream = env.get("PREDICTIONS_STREAM_NAME") or None
        if not dry_run and not stream:
            raise ValueError("PREDICTIONS_STREAM_NAME must be set unless DRY_RUN=true")
        return cls(
            model_uri=env.get("MODEL_URI", ""),
            predictions_stream_name=stream,
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            dry_run=dry_run,
            model_name=env.get("MODEL_NAME") or "ride-duration",
            model_version=env.get("MODEL_VERSION") or None,
            prediction_field=env.get("PREDICTION_FIELD") or "ride_duration",
            publish_concurrency=int(env.get("PUBLISH_CONCURRENCY") or 4),
            model_role=_role(env.get("MODEL_ROLE") or "production"),
            publish_aggregated=env.get("PUBLISH_AGGREGATED", "false").strip().lower() in TRUE_WORDS,
        )


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"MODEL_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
    return role


@dataclass
class BatchReport(BatchCounts):
    """Per-batch numbers: logged and emitted as metrics by the handler."""

    records: int = 0  # Kinesis records in the event
    user_records: int = 0  # of which, rides that came inside KPL-aggregated records
    predicted: int = 0
    published: int = 0
    retries: int = 0
    model_version: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _cycle_collection_paused():
    """Decoding, predicting and encoding a batch allocate ~7 containers per record and no
    reference cycles, so reference counting frees all of it; cycle collections meanwhile only
    re-scan the batch (~15% of a 10,000-record batch's time). Only the thread that paused
    collection resumes it, so concurrent batches (the local runner's) cannot leave it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ModelFault(RuntimeError):
    """The model loaded but cannot serve this build's features (a missing feature column, an
    ONNX input mismatch, a wrong output shape): no record is at fault, so the batch is
    reported for a retry as a whole instead of being bisected record by record."""


# Causes already logged with their traceback by this process (a Lambda container): a broken
# model fails every batch, and one traceback says all there is to say.
_model_faults_logged: set[str] = set()


def _features(batch: KinesisBatch, valid: list[BatchRecord]) -> tuple[list[BatchRecord], RideFeatures]:
    """Features of the whole batch in one call; if a record breaks that call, each record
    alone, and the ones that fail are dead-lettered with the reason."""
    try:
        return valid, features_from_events([item.value for item in valid])
    except Exception as exc:
        batch.log_unexpected(exc, "building features", valid)
    kept: list[BatchRecord] = []
    for item in valid:
        try:
            features_from_events([item.value])
        except Exception as exc:
            batch.dead_letter(item, f"cannot build features: {type(exc).__name__}: {exc}")
        else:
            kept.append(item)
    return kept, features_from_events([item.value for item in kept])


def _predict(
    batch: KinesisBatch, valid: list[BatchRecord], features: RideFeatures, model: LoadedModel, config: ConsumerConfig
) -> tuple[list[tuple[str, bytes]], list[BatchRecord], list[dict]]:
    """(output records, the records they came from, the records as dicts in a dry run); a
    non-finite prediction becomes a dead letter, a model that cannot predict a ModelFault."""
    try:
        values = model.predict(features)
    except Exception as exc:
        raise ModelFault(f"{type(exc).__name__}: {exc}") from exc
    if values.shape != (len(valid),):
        raise ModelFault(f"model returned {values.shape[0] if values.ndim else 0} values for {len(valid)} rides")
    finite = np.isfinite(values)
    if not finite.all():
        for item, value, ok in zip(valid, values.tolist(), finite.tolist(), strict=True):
            if not ok:
                batch.dead_letter(item, f"model returned a non-finite prediction ({value})")
        valid, values = [item for item, ok in zip(valid, finite.tolist(), strict=True) if ok], values[finite]
    out_records: list[tuple[str, bytes]] = []
    predictions: list[dict] = []
    field_name, name, version = config.prediction_field, model.name, model.version
    shadow = config.model_role == "shadow"
    for item, value in zip(valid, values.tolist(), strict=True):
        event = item.value
        # The prediction record (docs/contracts.md; rides.stream.events.parse_prediction reads it back),
        # built inline: a builder function per record cost ~4% of this path.
        record = {
            "model": name,
            "version": version,
            "prediction": {"ride_id": event.ride_id, field_name: value},
            "source": {
                "shard_id": item.shard_id,
                "sequence_number": item.sequence_number,
                "approximate_arrival_timestamp": item.arrival,
            },
        }
        if item.sub_sequence_number is not None:  # a user record of a KPL-aggregated record
            record["source"]["sub_sequence_number"] = item.sub_sequence_number
        if shadow:  # production records stay as the contract has always had them
            record["role"] = "shadow"
        if config.dry_run:
            predictions.append(record)
        out_records.append((event.partition_key, json_bytes(record)))
    return out_records, valid, predictions


def process_records(
    records: Sequence[Mapping],
    config: ConsumerConfig,
    *,
    publisher: KinesisPublisher | None,
    dead_letters: DeadLetterSink,
    time_left: Callable[[], float] | None = None,
    load_model: Callable[..., LoadedModel] = get_model,
    logger: logging.Logger | None = None,
) -> tuple[dict, BatchReport]:
    started = time.perf_counter()
    deadline = as_deadline(time_left)
    report = BatchReport(records=len(records))
    batch = KinesisBatch(records, logger=logger or log)
    with _cycle_collection_paused():
        valid = batch.parse(read_ride)

    out_records: list[tuple[str, bytes]] = []
    out_items: list[BatchRecord] = []  # out_records[i] came from out_items[i]
    predictions: list[dict] = []
    model = _load(batch, valid, config, load_model) if valid else None
    if model is not None:
        report.model_version = model.version
        with _cycle_collection_paused():
            valid, features = _features(batch, valid)
            try:
                out_records, out_items, predictions = _predict(batch, valid, features, model, config)
            except ModelFault as exc:
                # Only the records still valid: one dead-lettered for its features stays there.
                _model_fault(batch, valid, exc, config)
        report.predicted = len(out_records)

    if out_records and not config.dry_run:
        result = publisher.publish(out_records, deadline)
        report.published = result.sent
        report.retries += result.retries
        for code, n in result.errors.items():
            report.errors[code] = report.errors.get(code, 0) + n
        batch.report((out_items[i] for i in result.failed), Failure.PUBLISH_FAILED)

    outcome = batch.finish(dead_letters, deadline)
    # The publisher counted its failures by AWS's error codes above, not as PublishFailed again.
    response: dict = dict(report.settle(outcome, besides=(Failure.PUBLISH_FAILED,)))
    report.user_records = outcome.user_records
    report.seconds = time.perf_counter() - started
    if config.dry_run:
        response["predictions"] = predictions
    return response, report


def _load(
    batch: KinesisBatch, valid: list[BatchRecord], config: ConsumerConfig, load_model: Callable[..., LoadedModel]
) -> LoadedModel | None:
    """The model, or None once the batch is reported for a retry: the model may be fixed or
    promoted later, and a prediction is never guessed."""
    try:
        return load_model(config.model_uri, name=config.model_name, version=config.model_version)
    except ModelLoadError as exc:
        _model_fault(batch, valid, exc, config)
    except Exception as exc:
        # A loader that broke in a way it did not name (an empty MLmodel file): the same.
        _model_fault(batch, valid, ModelFault(f"{type(exc).__name__}: {exc}"), config, cause=exc)
    return None


def _model_fault(
    batch: KinesisBatch,
    valid: list[BatchRecord],
    exc: Exception,
    config: ConsumerConfig,
    cause: BaseException | None = None,
) -> None:
    code = Failure.MODEL_LOAD_ERROR if isinstance(exc, ModelLoadError) else Failure.MODEL_FAULT
    batch.report(valid, code)
    key = f"{config.model_uri}:{exc}"
    if key not in _model_faults_logged:
        _model_faults_logged.add(key)
        origin = cause or exc.__cause__ or exc
        log.error(
            "%s: model %s (%s) cannot serve; every batch is reported for a retry until it is fixed: %s",
            code,
            config.model_name,
            config.model_uri,
            exc,
            exc_info=(type(origin), origin, origin.__traceback__),
        )
