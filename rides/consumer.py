"""A Kinesis batch → predictions → publish → partial batch response.

Every input record ends in exactly one place: published, dead-lettered (it can never
succeed), or reported in `batchItemFailures` (it may succeed on a later try).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from rides.deadletter import DeadLetter, DeadLetterSink
from rides.events import InvalidEvent, RideEvent, json_bytes, parse_record_data
from rides.features import features_from_events
from rides.model import LoadedModel, ModelLoadError, get_model
from rides.publish import KinesisPublisher

log = logging.getLogger("rides.consumer")

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
        )


@dataclass
class BatchReport:
    """Per-batch numbers: logged and emitted as metrics by the handler."""

    records: int = 0
    predicted: int = 0
    published: int = 0
    dead_lettered: int = 0
    failed: int = 0
    retries: int = 0
    model_version: str | None = None
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class _Item:
    sequence_number: str | None
    shard_id: str
    data: str
    arrival: float | None
    event: RideEvent | None = None


def _item(record: Mapping) -> tuple[_Item, str | None]:
    """Pull the parts we need out of a Lambda Kinesis record; a broken envelope is a reason."""
    kinesis = record.get("kinesis") if type(record) is dict or isinstance(record, Mapping) else None
    if type(kinesis) is not dict and not isinstance(kinesis, Mapping):
        return _Item(None, "", "", None), "record has no kinesis object"
    event_id = record.get("eventID")
    item = _Item(
        kinesis.get("sequenceNumber"),
        # One string per shard, not one per record: a 10,000-record batch holds them all.
        sys.intern(event_id.partition(":")[0]) if type(event_id) is str else "",
        kinesis.get("data", ""),
        kinesis.get("approximateArrivalTimestamp"),
    )
    if type(item.data) is not str or not item.data:
        return item, "record has no kinesis.data"
    return item, None


def _source(item: _Item) -> dict:
    return {
        "shard_id": item.shard_id,
        "sequence_number": item.sequence_number,
        "approximate_arrival_timestamp": item.arrival,
    }


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


def _decode(records: Sequence[Mapping]) -> tuple[list[_Item], list[tuple[_Item, str]]]:
    """(valid items, dead letters with their reasons), in input order."""
    valid: list[_Item] = []
    letters: list[tuple[_Item, str]] = []
    for record in records:
        item, problem = _item(record)
        if problem is None:
            try:
                item.event = parse_record_data(item.data)
            except InvalidEvent as exc:
                problem = str(exc)
        if problem is None:
            valid.append(item)
        else:
            letters.append((item, problem))
    return valid, letters


def _predict(
    valid: list[_Item], model: LoadedModel, config: ConsumerConfig, letters: list[tuple[_Item, str]]
) -> tuple[list[tuple[str, bytes]], list[_Item], list[dict]]:
    """(output records, the items they came from, the records as dicts in a dry run); a
    non-finite prediction becomes a dead letter."""
    values = model.predict(features_from_events([item.event for item in valid]))
    finite = np.isfinite(values)
    if not finite.all():
        letters.extend(
            (item, f"model returned a non-finite prediction ({value})")
            for item, value, ok in zip(valid, values.tolist(), finite.tolist(), strict=True)
            if not ok
        )
        valid, values = [item for item, ok in zip(valid, finite.tolist(), strict=True) if ok], values[finite]
    out_records: list[tuple[str, bytes]] = []
    predictions: list[dict] = []
    field_name, name, version = config.prediction_field, model.name, model.version
    for item, value in zip(valid, values.tolist(), strict=True):
        record = {
            "model": name,
            "version": version,
            "prediction": {"ride_id": item.event.ride_id, field_name: value},
            "source": _source(item),
        }
        if config.dry_run:
            predictions.append(record)
        out_records.append((item.event.partition_key, json_bytes(record)))
    return out_records, valid, predictions


def process_records(
    records: Sequence[Mapping],
    config: ConsumerConfig,
    *,
    publisher: KinesisPublisher | None,
    dead_letters: DeadLetterSink,
    time_left: Callable[[], float] | None = None,
    load_model: Callable[..., LoadedModel] = get_model,
) -> tuple[dict, BatchReport]:
    started = time.perf_counter()
    report = BatchReport(records=len(records))
    with _cycle_collection_paused():
        valid, letters = _decode(records)

    retry_later: list[_Item] = []
    out_records: list[tuple[str, bytes]] = []
    out_items: list[_Item] = []  # out_records[i] came from out_items[i]
    predictions: list[dict] = []
    if valid:
        try:
            model = load_model(config.model_uri, name=config.model_name, version=config.model_version)
        except ModelLoadError as exc:
            # The model may be fixed or promoted later: retry, never guess a prediction.
            log.error(str(exc))
            report.errors["ModelLoadError"] = len(valid)
            retry_later.extend(valid)
            model = None
        if model is not None:
            report.model_version = model.version
            with _cycle_collection_paused():
                out_records, out_items, predictions = _predict(valid, model, config, letters)
            report.predicted = len(out_records)

    if out_records and not config.dry_run:
        result = publisher.publish(out_records, time_left)
        report.published = result.sent
        report.retries += result.retries
        for code, n in result.errors.items():
            report.errors[code] = report.errors.get(code, 0) + n
        retry_later.extend(out_items[i] for i in result.failed)

    if letters:
        undelivered = dead_letters.send(
            [DeadLetter(reason, item.data, _source(item)) for item, reason in letters], time_left
        )
        report.dead_lettered = len(letters) - len(undelivered)
        if undelivered:
            report.errors["DeadLetterUndelivered"] = len(undelivered)
        retry_later.extend(letters[i][0] for i in undelivered)

    missing_ids = [item for item in retry_later if not item.sequence_number]
    if missing_ids:
        # Without a sequence number we cannot point Lambda at the record: fail the whole batch.
        raise RuntimeError(f"{len(missing_ids)} records without a sequence number could not be handled")
    failures = sorted({item.sequence_number for item in retry_later}, key=_seq_key)
    report.failed = len(failures)
    report.seconds = time.perf_counter() - started
    response: dict = {"batchItemFailures": [{"itemIdentifier": seq} for seq in failures]}
    if config.dry_run:
        response["predictions"] = predictions
    return response, report


def _seq_key(seq: str) -> tuple[int, int, str]:
    # Kinesis sequence numbers are decimal strings of up to 128 digits: compare as numbers.
    return (0, len(seq), seq) if seq.isdigit() else (1, 0, seq)
