"""The models the stream predicts, declared once, in rides/stream/models.json: each is a consumer
on `ride-events`, a field in the prediction records, an outcome in `ride-completed` events, a
training target and (when `required`) a prediction the decision service waits for.

JSON rather than Python because Terraform reads the same file (infra/main.tf `local.consumers`,
infra/archive.tf's Glue columns): adding a model is one entry there, and a model's location is
one entry in Terraform's `models` map. Derived from it in Python: rides.settings.CONSUMERS (the
local stack, the CLI), rides.stream.events' OUTCOME_FIELDS, the decision service's
DEFAULT_REQUIRED_MODELS, training's TARGET_RANGES, the archive's prediction and completion
columns, the smoke test's models, the models report's units and the deploy's list of models.
tests/test_model_specs.py adds a fourth model to the file and finds it in each of them,
the Terraform plan included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REGISTRY = Path(__file__).with_name("models.json")


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


def read_models(path: Path = REGISTRY) -> tuple[ModelSpec, ...]:
    entries = json.loads(path.read_text())
    models = tuple(ModelSpec(**{**entry, "target_range": tuple(entry["target_range"])}) for entry in entries)
    for field in ("key", "model_name", "prediction_field"):
        names = [getattr(m, field) for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: two models share a {field}: {names}")
    return models


MODELS: tuple[ModelSpec, ...] = read_models()
