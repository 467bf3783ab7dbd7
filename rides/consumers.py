"""The consumers on `ride-events`: one code path, configured per model.

Each runs as its own Lambda (one entry in Terraform's `local.consumers`) or, locally, as its own
event-source runner with its own checkpoints; they all publish to `ride-predictions`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsumerSpec:
    key: str
    model_name: str  # registered model, MODEL_NAME
    prediction_field: str  # PREDICTION_FIELD in the prediction record
    target: str  # training target column

    @property
    def function_name(self) -> str:
        return f"{self.model_name}-consumer"


CONSUMERS = {
    "duration": ConsumerSpec("duration", "ride-duration", "ride_duration", "duration"),
    "fare": ConsumerSpec("fare", "ride-fare", "fare_amount", "fare_amount"),
    "tip": ConsumerSpec("tip", "ride-tip", "tip_amount", "tip_amount"),
}


def by_model_name(model_name: str) -> ConsumerSpec | None:
    return next((spec for spec in CONSUMERS.values() if spec.model_name == model_name), None)
