"""The models the stream predicts are declared once (rides/stream/models.json, read into
rides.stream.model_specs.MODELS): a fourth model added there alone is found in every place that
lists the models, Python's and the Terraform plan's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOURTH = {
    "key": "distance",
    "model_name": "ride-distance",
    "prediction_field": "ride_distance",
    "outcome_field": "trip_miles",
    "target": "trip_distance",
    "target_range": [0.1, 80.0],
    "unit": "mi",
    "required": True,
}


@pytest.fixture
def registry(tmp_path) -> Path:
    """The project's registry with the fourth model added: one entry."""
    from rides.stream.model_specs import REGISTRY

    path = tmp_path / "models.json"
    path.write_text(json.dumps([*json.loads(REGISTRY.read_text()), FOURTH], indent=2))
    return path


# What each derived place says once the fourth model is in MODELS (a fresh interpreter: the
# derived names are made when their modules are first imported).
PROBE = """
import json
import sys
from pathlib import Path
import rides.stream.model_specs as specs
specs.MODELS = specs.read_models(Path(sys.argv[1]))

from rides.models.report import UNITS
from rides.models.training import TARGET_RANGES
from rides.operate.archive import COLUMNS
from rides.operate.smoke import STREAM_MODELS
from rides.settings import CONSUMERS
from rides.stream.decision import DEFAULT_REQUIRED_MODELS
from rides.stream.events import OUTCOME_FIELDS, completion_from

completed = completion_from(
    {"type": "ride-completed", "ride_id": "r-1", "lpep_dropoff_datetime": "2024-03-01T10:00:00", "trip_miles": 2.5}
)
print(json.dumps({
    "consumer": CONSUMERS["distance"].function_name,
    "outcome_field": OUTCOME_FIELDS["ride_distance"],
    "required": list(DEFAULT_REQUIRED_MODELS),
    "target_range": TARGET_RANGES["trip_distance"],
    "unit": UNITS["trip_distance"],
    "smoke": list(STREAM_MODELS),
    "predictions": dict(COLUMNS["predictions"])["prediction"],
    "completions": dict(COLUMNS["completions"]).get("trip_miles"),
    "outcomes": completed.outcomes,
}))
"""


def test_a_fourth_model_declared_once_is_found_in_every_place_that_lists_the_models(registry):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(registry)], cwd=ROOT, capture_output=True, text=True, check=True
    )
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


def test_a_fourth_model_declared_once_is_a_consumer_in_the_terraform_plan(registry, tmp_path):
    """Terraform reads the same file: the fourth model's entry and its location in the `models`
    map are all a plan needs to create its consumer, switch on its mapping and archive its
    predictions and outcomes."""
    from scripts import terraform_check
    from tests.test_terraform_validate import MODELS, SERVED

    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform plan: {why}")
    from moto.server import ThreadedMotoServer

    served = {**SERVED, "ride-distance": {"uri": "s3://rides-models-stg/mlflow/1/ride-distance", "version": "1"}}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        plan = terraform_check.plan(
            terraform,
            f"http://{host}:{port}",
            ["vars/stg.tfvars"],
            {**MODELS, "models": json.dumps(served)},
            tmp_path / "plan",
            registry=registry,
        )
    finally:
        server.stop()
    created = {
        r["address"]: r["change"]["after"] for r in plan["resource_changes"] if r["change"]["actions"] == ["create"]
    }
    functions = {
        after["function_name"] for after in created.values() if "function_name" in after and "runtime" in after
    }
    assert {"ride-duration-consumer-stg", "ride-fare-consumer-stg", "ride-tip-consumer-stg"} <= functions
    assert "ride-distance-consumer-stg" in functions
    mapping = created['module.consumer["distance"].aws_lambda_event_source_mapping.this']
    assert mapping["enabled"] is True  # its model has a location
    columns = {
        after["name"]: {c["name"]: c["type"] for c in after["storage_descriptor"][0]["columns"]}
        for after in created.values()
        if "storage_descriptor" in after
    }
    predictions = next(c for name, c in columns.items() if "prediction" in name)
    assert predictions["prediction"] == (
        "struct<ride_id:string,ride_duration:double,fare_amount:double,tip_amount:double,ride_distance:double>"
    )
    completions = next(c for name, c in columns.items() if "completion" in name)
    assert completions["trip_miles"] == "double"


def test_an_entry_reads_into_a_spec_with_its_defaults_and_two_models_cannot_share_a_name(tmp_path):
    from rides.stream.model_specs import ModelSpec, read_models

    path = tmp_path / "models.json"
    minimal = {k: FOURTH[k] for k in ("key", "model_name", "prediction_field", "outcome_field", "target")}
    path.write_text(
        json.dumps(
            [FOURTH, {**minimal, "key": "k2", "model_name": "m2", "prediction_field": "p2"} | {"target_range": [1, 2]}]
        )
    )
    assert read_models(path) == (
        ModelSpec(**{**FOURTH, "target_range": (0.1, 80.0)}),
        ModelSpec(**{**minimal, "key": "k2", "model_name": "m2", "prediction_field": "p2", "target_range": (1, 2)}),
    )
    assert read_models(path)[1].unit == "" and read_models(path)[1].required is True
    for field in ("key", "model_name", "prediction_field"):
        twin = {**FOURTH, **{f: f"other-{f}" for f in ("key", "model_name", "prediction_field") if f != field}}
        path.write_text(json.dumps([FOURTH, twin]))
        with pytest.raises(ValueError, match=f"two models share a {field}: "):
            read_models(path)
    path.write_text(json.dumps([FOURTH, {**FOURTH, "key": "x", "model_name": "y", "prediction_field": "z"}]))
    assert [m.key for m in read_models(path)] == ["distance", "x"]  # only the names must differ
