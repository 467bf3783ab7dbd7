"""The models the stream predicts, declared once: each is a consumer on `ride-events`, a field
in the prediction records, an outcome in `ride-completed` events, a training target and (when
`required`) a prediction the decision service waits for.

Derived from it: rides.settings.CONSUMERS (the local stack, the CLI), rides.stream.events'
OUTCOME_FIELDS, the decision service's DEFAULT_REQUIRED_MODELS, training's TARGET_RANGES, the
archive's prediction and completion columns, the smoke test's models and the models report's
units. Terraform's `local.consumers` (infra/main.tf) is held equal to it by
tests/test_infra.py; tests/test_consumer_registry.py adds a fourth model here and finds it in
each derived place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    key: str  # the consumer's key: `rides consume --consumer KEY`, Terraform's `local.consumers`
    model_name: str  # the registered model (MODEL_NAME)
    prediction_field: str  # its value's name in the prediction record (PREDICTION_FIELD)
    outcome_field: str  # the ride-completed event's field with the actual value
    target: str  # the training frame's column
    target_range: tuple[float, float]  # plausible targets: training drops rows outside it
    unit: str = ""  # of its values, in reports ("min", "$")
    required: bool = True  # the decision service decides a ride once every required model predicted


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("duration", "ride-duration", "ride_duration", "duration_minutes", "duration", (1.0, 60.0), "min"),
    ModelSpec("fare", "ride-fare", "fare_amount", "fare_amount", "fare_amount", (0.01, 500.0), "$"),
    ModelSpec("tip", "ride-tip", "tip_amount", "tip_amount", "tip_amount", (0.0, 200.0), "$"),
)
