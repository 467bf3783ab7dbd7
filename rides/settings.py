"""What the local tools and the checks share: the consumers on `ride-events`, the resource
names, the event source mapping's settings, and where local state lives. tests/test_infra.py
holds each against infra/ in both directions. (The Lambda package, rides.stream, reads its
configuration from the environment only and imports nothing from here.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rides.stream.model_specs import MODELS

# -- the consumers on ride-events: one code path, configured per model ---------------------------
# Each runs as its own Lambda (one entry in Terraform's `local.consumers`) or, locally, as its own
# event-source runner with its own checkpoints; they all publish to `ride-predictions`.


@dataclass(frozen=True)
class ConsumerSpec:
    key: str
    model_name: str  # registered model, MODEL_NAME
    prediction_field: str  # PREDICTION_FIELD in the prediction record
    target: str  # training target column
    role: str = "production"  # MODEL_ROLE: "shadow" runs a challenger beside production

    @property
    def function_name(self) -> str:
        return f"{self.model_name}-consumer" if self.role == "production" else f"{self.model_name}-{self.role}-consumer"

    @property
    def control_name(self) -> str:
        """Which promotion it serves (rides.models.promote.local_control_file)."""
        return self.model_name if self.role == "production" else f"{self.model_name}@{self.role}"


# One per model the stream predicts (rides.stream.model_specs.MODELS, where a model is added).
CONSUMERS = {m.key: ConsumerSpec(m.key, m.model_name, m.prediction_field, m.target) for m in MODELS}
# A challenger version of the duration model on the same events (rides promote --as shadow): its
# predictions carry "role": "shadow", which the decision service ignores and the evaluation compares.
SHADOW = ConsumerSpec("shadow", "ride-duration", "ride_duration", "duration", role="shadow")


# -- resource names: the staging defaults that Terraform declares and the local stack creates ------


@dataclass(frozen=True)
class StackNames:
    input_stream: str = "ride-events"
    predictions_stream: str = "ride-predictions"
    decisions_stream: str = "ride-decisions"
    # Ground truth: `ride-completed` events, when rides end (rides.stream.events.parse_completion).
    completions_stream: str = "ride-completions"
    dead_letter_queue: str = "ride-events-dlq"
    # Where the event source mapping sends metadata of batches that exhausted their retries.
    failed_batches_queue: str = "ride-events-failed-batches"
    # Rides the decision service decided `review`, for a person (`rides review`).
    review_queue: str = "ride-review"
    model_bucket: str = "rides-models-stg"
    decisions_table: str = "ride-decisions"
    evaluations_table: str = "ride-evaluations"
    consumer_function: str = "ride-duration-consumer"
    experiment: str = "ride-duration"
    registered_model: str = "ride-duration"

    @classmethod
    def from_env(cls) -> StackNames:
        """Each name can be overridden, e.g. RIDES_MODEL_BUCKET=my-bucket."""
        defaults = cls()
        return cls(
            **{
                name: os.environ.get(f"RIDES_{name.upper()}", getattr(defaults, name))
                for name in defaults.__dataclass_fields__
            }
        )


# -- the event source mapping: one set, for the local runner, the LocalStack deploy and Terraform --


@dataclass(frozen=True)
class EventSourceSettings:
    batch_size: int = 500
    maximum_batching_window_in_seconds: int = 1
    starting_position: str = "TRIM_HORIZON"
    parallelization_factor: int = 1
    bisect_batch_on_function_error: bool = True
    maximum_retry_attempts: int = 5  # -1 = until the record expires
    maximum_record_age_in_seconds: int = 3600  # -1 = the stream's retention
    function_response_types: tuple[str, ...] = ("ReportBatchItemFailures",)

    def __post_init__(self):
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size must be 1-10000")
        if self.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError("starting_position must be TRIM_HORIZON or LATEST")
        if not (self.maximum_record_age_in_seconds == -1 or 60 <= self.maximum_record_age_in_seconds <= 604_800):
            raise ValueError("maximum_record_age_in_seconds must be -1 or 60-604800")
        if not -1 <= self.maximum_retry_attempts <= 10_000:
            raise ValueError("maximum_retry_attempts must be -1..10000")


# What a function changes of the one policy above, in one table: the local runner applies it and
# Terraform's `local.event_source_overrides` is the same table (tests/test_infra.py holds them equal).
# The decision service's window is the consumers' 1 s: a longer one puts more of a ride's three
# predictions (from three consumers polling on their own) in one batch, and since a ride split
# over two batches costs two writes and no index writes (watch items), 2 s no longer pays for the
# second it adds (README, "What a ride costs"). Terraform: decision_batching_window_seconds.
DECISION_BATCHING_WINDOW_SECONDS = int(os.environ.get("RIDES_DECISION_BATCHING_WINDOW_SECONDS") or 1)
EVENT_SOURCE_OVERRIDES: dict[str, dict] = {
    "consumer": {},
    # one writer per ride (rides/stream/decision/store.py)
    "decisions": {"parallelization_factor": 1, "maximum_batching_window_in_seconds": DECISION_BATCHING_WINDOW_SECONDS},
    # big batches over a few seconds: a batch's sums are one transaction, so the more per batch
    # the fewer writes per ride; one invocation per shard (the shard's mark, evaluation/store.py)
    "evaluation": {"batch_size": 2000, "maximum_batching_window_in_seconds": 5, "parallelization_factor": 1},
}


def event_source_for(function: str, base: EventSourceSettings | None = None) -> EventSourceSettings:
    """The policy of one function ("consumer", "decisions", "evaluation"): `base` (the one policy,
    as configured) with the function's overrides."""
    return replace(base or EventSourceSettings(), **EVENT_SOURCE_OVERRIDES[function])


# -- local state: the emulator's pid and log, runner checkpoints, the MLflow DB ---------------------


def state_dir() -> Path:
    """RIDES_HOME, or `.rides` in the working directory (the project root under make)."""
    path = Path(os.environ.get("RIDES_HOME") or Path.cwd() / ".rides").absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path
