"""The models the stream predicts are declared once (rides.stream.consumers.MODELS): a fourth
model added there alone is found in every place that lists the models, and the Terraform
check then asks for its entry in `local.consumers`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOURTH = 'ModelSpec("distance", "ride-distance", "ride_distance", "trip_miles", "trip_distance", (0.1, 80.0), "mi")'

# What each derived place says once the fourth model is in MODELS (a fresh interpreter: the
# derived names are made when their modules are first imported).
PROBE = f"""
import json
import rides.stream.consumers as registry
registry.MODELS = (*registry.MODELS, registry.{FOURTH})

from rides.models.report import UNITS
from rides.models.training import TARGET_RANGES
from rides.operate.archive import COLUMNS
from rides.operate.smoke import STREAM_MODELS
from rides.settings import CONSUMERS
from rides.stream.decision import DEFAULT_REQUIRED_MODELS
from rides.stream.events import OUTCOME_FIELDS, completion_from

completed = completion_from(
    {{"type": "ride-completed", "ride_id": "r-1", "lpep_dropoff_datetime": "2024-03-01T10:00:00", "trip_miles": 2.5}}
)
print(json.dumps({{
    "consumer": CONSUMERS["distance"].function_name,
    "outcome_field": OUTCOME_FIELDS["ride_distance"],
    "required": list(DEFAULT_REQUIRED_MODELS),
    "target_range": TARGET_RANGES["trip_distance"],
    "unit": UNITS["trip_distance"],
    "smoke": list(STREAM_MODELS),
    "predictions": dict(COLUMNS["predictions"])["prediction"],
    "completions": dict(COLUMNS["completions"]).get("trip_miles"),
    "outcomes": completed.outcomes,
}}))
"""


def test_a_fourth_model_declared_once_is_found_in_every_place_that_lists_the_models():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found == {
        "consumer": "ride-distance-consumer",
        "outcome_field": "trip_miles",
        "required": ["ride-duration", "ride-fare", "ride-tip", "ride-distance"],
        "target_range": [0.1, 80.0],
        "unit": "mi",
        "smoke": ["ride-duration", "ride-fare", "ride-tip", "ride-distance"],
        "predictions": "struct<ride_id:string,ride_duration:double,fare_amount:double,tip_amount:double,"
        "ride_distance:double>",
        "completions": "double",
        "outcomes": {"ride_distance": 2.5},
    }


def test_the_three_models_of_today_are_what_the_contracts_say():
    from rides.operate.archive import COLUMNS
    from rides.settings import CONSUMERS
    from rides.stream.decision import DEFAULT_REQUIRED_MODELS
    from rides.stream.events import OUTCOME_FIELDS

    assert {k: s.function_name for k, s in CONSUMERS.items()} == {
        "duration": "ride-duration-consumer",
        "fare": "ride-fare-consumer",
        "tip": "ride-tip-consumer",
    }
    assert OUTCOME_FIELDS == {
        "ride_duration": "duration_minutes",
        "fare_amount": "fare_amount",
        "tip_amount": "tip_amount",
    }
    assert DEFAULT_REQUIRED_MODELS == ("ride-duration", "ride-fare", "ride-tip")
    assert dict(COLUMNS["predictions"])["prediction"] == (
        "struct<ride_id:string,ride_duration:double,fare_amount:double,tip_amount:double>"
    )


def test_terraform_is_held_to_the_registry_so_a_new_model_asks_for_its_entry(monkeypatch):
    """tests/test_infra.py compares `local.consumers` with CONSUMERS both ways: with a fourth
    model in the registry and none in Terraform, it fails and names the missing entry."""
    import pytest

    from rides import settings
    from rides.settings import ConsumerSpec
    from tests import test_infra

    fourth = ConsumerSpec("distance", "ride-distance", "ride_distance", "trip_distance")
    monkeypatch.setattr(settings, "CONSUMERS", {**settings.CONSUMERS, "distance": fourth})
    with pytest.raises(AssertionError) as failed:
        test_infra.test_one_consumer_entry_per_registered_model()
    assert "ride-distance" in str(failed.value)
