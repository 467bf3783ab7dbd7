"""The promotion gate: refuses and accepts on constructed evaluations, with the figures."""

from __future__ import annotations

import random

import boto3
import pytest
from click.testing import CliRunner

from rides.models.promotion_gate import judge
from rides.operate.evaluation_report import RowFigures
from rides.stream.evaluation.sums import Evaluated


class FakeStore(RowFigures):
    """Evaluated pairs read like the evaluations table (its paired sums: the rides both saw)."""

    def __init__(self, rows):
        super().__init__({})
        self.rows_list = []
        self.add(rows)

    def add(self, rows):
        self.rows_list += rows
        self.rows = {}
        for r in self.rows_list:
            self.rows.setdefault((r.model, r.version, r.role), []).append(r)


def rows(version, role, errors, start=0):
    return [
        Evaluated(f"r{start + i}", "ride-duration", version, role, "ride_duration", 20.0 + e, 20.0, "2021-02-03T08")
        for i, e in enumerate(errors)
    ]


def noise(n, scale, seed):
    rng = random.Random(seed)
    return [rng.gauss(0, scale) for _ in range(n)]


def test_nothing_to_compare_with_is_allowed():
    assert judge(FakeStore([]), "ride-duration", "1", None).allowed
    assert judge(FakeStore([]), "ride-duration", "2", "2").allowed


def test_too_few_rides_side_by_side_is_refused_with_the_counts():
    store = FakeStore(rows("2", "shadow", noise(300, 3, 1)) + rows("1", "production", noise(300, 5, 2)))
    verdict = judge(store, "ride-duration", "2", "1")
    assert not verdict.allowed and "300 rides evaluated beside production version 1" in verdict.reason
    assert "needs 500" in verdict.reason
    # rides only one of them saw do not count: 600 shadow rides, 300 of them shared
    store.add(rows("2", "shadow", noise(300, 3, 3), start=1000))
    assert "300 rides evaluated" in judge(store, "ride-duration", "2", "1").reason
    assert judge(store, "ride-duration", "2", "1", min_rides=300).allowed


def test_a_worse_shadow_is_refused_and_a_better_or_equal_one_accepted():
    production = rows("1", "production", noise(800, 4, 4))
    worse = judge(FakeStore(production + rows("2", "shadow", noise(800, 6, 5))), "ride-duration", "2", "1")
    assert not worse.allowed
    assert worse.reason.startswith("version 2 is worse than production version 1 on the same 800 rides: RMSE")
    assert worse.challenger.rmse > worse.incumbent.rmse * 1.02 and "the gate allows +2.0%" in worse.reason
    better = judge(FakeStore(production + rows("2", "shadow", noise(800, 3, 6))), "ride-duration", "2", "1")
    assert better.allowed and "is better than production version 1" in better.reason
    same = judge(
        FakeStore(production + rows("2", "shadow", [e * 1.01 for e in noise(800, 4, 4)])), "ride-duration", "2", "1"
    )
    assert same.allowed and "within the margin" in same.reason  # +1% RMSE, under the 2% margin


@pytest.fixture
def two_versions(aws, tmp_path, monkeypatch, trained):
    from rides.local.stack import decisions_table_spec, evaluations_table_spec
    from rides.models.registry import log_training
    from rides.settings import StackNames

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    aws["s3"].create_bucket(Bucket=StackNames().model_bucket)
    boto3.client("dynamodb").create_table(**evaluations_table_spec("ride-evaluations"))
    boto3.client("dynamodb").create_table(**decisions_table_spec("ride-decisions"))
    for _ in range(2):
        log_training(trained, train_source="2021-01", val_source="2021-02")
    return tmp_path


def test_rides_promote_runs_the_gate_and_force_overrides_it(two_versions):
    from rides.cli import main
    from rides.models.promote import read_local_model
    from rides.stream.evaluation.store import EvaluationStore

    runner = CliRunner()
    first = runner.invoke(main, ["promote", "--version", "1"])
    assert first.exit_code == 0 and "nothing to compare with" in first.output, first.output
    shadow = runner.invoke(main, ["promote", "--version", "2", "--as", "shadow"])
    assert shadow.exit_code == 0 and "now @shadow" in shadow.output, shadow.output
    assert read_local_model("ride-duration@shadow")["MODEL_VERSION"] == "2"
    assert read_local_model("ride-duration")["MODEL_VERSION"] == "1"  # production untouched
    # each says its entry in Terraform's `models` map, as a tfvars file takes it
    import hcl2

    from tests.test_infra import _plain

    def entry(output: str) -> dict:
        line = next(line for line in output.splitlines() if line.startswith("terraform: "))
        return _plain(hcl2.loads(line.removeprefix("terraform: ")))["models"]

    assert entry(first.output) == {
        "ride-duration": {"uri": read_local_model("ride-duration")["MODEL_URI"], "version": "1"}
    }
    assert entry(shadow.output) == {
        "ride-duration@shadow": {"uri": read_local_model("ride-duration@shadow")["MODEL_URI"], "version": "2"}
    }

    refused = runner.invoke(main, ["promote", "--version", "2"])
    assert refused.exit_code == 1 and "refused: version 2 has 0 rides evaluated" in refused.output

    # the evaluation consumer joins 600 rides' outcomes with both versions' predictions
    from datetime import datetime

    from rides.stream.decision import DecisionConfig, DecisionStore
    from rides.stream.decision.service import merged
    from rides.stream.events import RideCompleted, prediction_from

    rides = DecisionStore(boto3.client("dynamodb"), "ride-decisions")
    errors = zip(noise(600, 4, 7), noise(600, 6, 8), strict=True)
    rides.save(
        [
            merged(
                None,
                [
                    prediction_from(
                        {
                            "model": "ride-duration",
                            "version": v,
                            "role": role,
                            "prediction": {"ride_id": i, "ride_duration": 20.0 + e},
                        }
                    )
                    for v, role, e in (("1", "production", mine), ("2", "shadow", theirs))
                ],
                0.0,
                DecisionConfig.from_env({"REQUIRED_MODELS": "ride-duration"}),
            )
            for i, (mine, theirs) in enumerate(errors)
        ]
    )
    store = EvaluationStore(boto3.client("dynamodb"), "ride-evaluations", decisions_table="ride-decisions")
    outcomes = [(None, RideCompleted(str(i), datetime(2021, 2, 3, 8), {"ride_duration": 20.0})) for i in range(600)]
    assert len(store.add("ride-completions#shardId-0", outcomes, now=0.0).evaluated) == 1200
    worse = runner.invoke(main, ["promote", "--version", "2"])
    assert worse.exit_code == 1 and "is worse than production version 1 on the same 600 rides" in worse.output
    forced = runner.invoke(main, ["promote", "--version", "2", "--force"])
    assert forced.exit_code == 0 and "gate overridden (--force)" in forced.output
    assert read_local_model("ride-duration")["MODEL_VERSION"] == "2"


def test_a_gate_without_its_table_says_what_to_do(two_versions, monkeypatch):
    """A stack with no evaluation table (LocalStack's, which runs no DynamoDB here) must say
    where the gate looks and what to do, not just that a read failed."""
    from botocore.exceptions import ClientError

    from rides.cli import main
    from rides.stream.evaluation.store import EvaluationStore

    runner = CliRunner()
    assert runner.invoke(main, ["promote", "--version", "1"]).exit_code == 0
    assert runner.invoke(main, ["promote", "--version", "2", "--as", "shadow"]).exit_code == 0
    boto3.client("dynamodb").delete_table(TableName="ride-evaluations")
    missing = runner.invoke(main, ["promote", "--version", "2"])
    assert missing.exit_code == 1
    assert "no live evaluation table 'ride-evaluations'" in missing.output, missing.output
    assert "AWS_ENDPOINT_URL_DYNAMODB" in missing.output and "--force" in missing.output

    def not_enabled(self, *args, **kwargs):  # what LocalStack answers for a service left out of SERVICES
        raise ClientError(
            {
                "Error": {
                    "Code": "InternalFailure",
                    "Message": "Service 'dynamodb' is not enabled. "
                    "Please check your 'SERVICES' configuration variable.",
                }
            },
            "Query",
        )

    monkeypatch.setattr(EvaluationStore, "paired", not_enabled)
    disabled = runner.invoke(main, ["promote", "--version", "2"])
    assert disabled.exit_code == 1
    assert "has no DynamoDB" in disabled.output and "AWS_ENDPOINT_URL_DYNAMODB" in disabled.output, disabled.output
