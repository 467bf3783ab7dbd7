"""rides release: aliases moved to the published versions (directly or by CodeDeploy), and back."""

from __future__ import annotations

import json

import boto3
import pytest

from rides.models.release import Release, ReleaseFailed, load_releases, release, roll_back, serving
from tests.helpers import zip_function


class FakeCodeDeploy:
    """CodeDeploy as deploy.sh sees it: a deployment goes through the given states; one that
    succeeds moves the alias to its target (as the service does), one that fails leaves it."""

    def __init__(self, lam, outcomes: dict[str, list[str]]):
        self.lam, self.outcomes, self.calls, self.deployments = lam, outcomes, [], {}

    def create_deployment(self, **kwargs):
        self.calls.append(("create_deployment", kwargs["deploymentGroupName"]))
        content = json.loads(kwargs["revision"]["appSpecContent"]["content"])
        [resource] = content["Resources"]
        [(function, spec)] = resource.items()
        deployment_id = f"d-{function}"
        self.deployments[deployment_id] = (spec["Properties"], list(self.outcomes[function]))
        return {"deploymentId": deployment_id}

    def get_deployment(self, deploymentId):
        self.calls.append(("get_deployment", deploymentId))
        props, states = self.deployments[deploymentId]
        status = states.pop(0) if len(states) > 1 else states[0]
        if status == "Succeeded":
            name, alias, target = props["Name"], props["Alias"], props["TargetVersion"]
            self.lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=target)
        info = {"status": status}
        if status == "Failed":
            info["errorInformation"] = {"message": "alarm rides-prod-errors fired"}
        return {"deploymentInfo": info}

    def stop_deployment(self, deploymentId, autoRollbackEnabled):
        self.calls.append(("stop_deployment", deploymentId, autoRollbackEnabled))


@pytest.fixture
def functions(aws):
    """Three functions as an apply leaves them: `live` on version 1, version 2 just published."""
    lam = boto3.client("lambda")
    for name in ("consumer", "decisions", "batch"):
        zip_function(lam, name, publish=True)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        lam.update_function_configuration(FunctionName=name, Description="new model")
        assert lam.publish_version(FunctionName=name)["Version"] == "2"
    return lam


def releases(groups=("consumer", "decisions")) -> list[Release]:
    return load_releases(
        [
            {
                "function_name": name,
                "alias": "live",
                "version": "2",
                "application": "rides-prod" if name in groups else None,
                "deployment_group": name if name in groups else None,
            }
            for name in ("consumer", "decisions", "batch")
        ]
    )


def live(lam, name: str) -> str:
    return lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"]


def test_codedeploy_shifts_the_grouped_functions_and_the_rest_move_directly(functions):
    codedeploy = FakeCodeDeploy(functions, {"consumer": ["InProgress", "Succeeded"], "decisions": ["Succeeded"]})
    outcome = release(releases(), lambda_client=functions, codedeploy_client=codedeploy, sleep=lambda s: None)
    assert {live(functions, n) for n in ("consumer", "decisions", "batch")} == {"2"}
    # Every deployment starts before any is waited on: a canary's minutes are paid once.
    assert codedeploy.calls[:2] == [("create_deployment", "consumer"), ("create_deployment", "decisions")]
    props, _ = codedeploy.deployments["d-consumer"]
    assert props == {"Name": "consumer", "Alias": "live", "CurrentVersion": "1", "TargetVersion": "2"}
    assert [s.status for s in outcome.shifts] == ["Succeeded"] * 3


def test_nothing_moves_when_the_alias_already_serves_the_version(functions):
    for name in ("consumer", "decisions", "batch"):
        functions.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    codedeploy = FakeCodeDeploy(functions, {})
    outcome = release(releases(), lambda_client=functions, codedeploy_client=codedeploy)
    assert codedeploy.calls == [] and not any(s.moved for s in outcome.shifts)


def test_a_failed_deployment_fails_the_release_and_roll_back_returns_every_alias(functions):
    codedeploy = FakeCodeDeploy(functions, {"consumer": ["InProgress", "Failed"], "decisions": ["Succeeded"]})
    before = serving(releases(), functions)
    with pytest.raises(ReleaseFailed, match=r"consumer:live 1 -> 2: Failed .*alarm rides-prod-errors fired"):
        release(releases(), lambda_client=functions, codedeploy_client=codedeploy, before=before, sleep=lambda s: None)
    assert live(functions, "decisions") == live(functions, "batch") == "2"  # these went through
    roll_back(before, releases(), lambda_client=functions)
    assert {live(functions, n) for n in ("consumer", "decisions", "batch")} == {"1"}


def test_a_deployment_that_does_not_finish_in_time_is_stopped_with_its_rollback(functions):
    codedeploy = FakeCodeDeploy(functions, {"consumer": ["InProgress"], "decisions": ["Succeeded"]})
    clock = iter(range(0, 10_000, 100))
    with pytest.raises(ReleaseFailed, match=r"consumer:live 1 -> 2: Stopped .*not done within 300s"):
        release(
            releases(),
            lambda_client=functions,
            codedeploy_client=codedeploy,
            timeout=300,
            sleep=lambda s: None,
            clock=lambda: next(clock),
        )
    assert ("stop_deployment", "d-consumer", True) in codedeploy.calls
    assert live(functions, "consumer") == "1"


def test_a_function_created_by_this_deploy_has_nothing_to_roll_back_to(functions):
    before = serving([*releases(), Release("not-yet", "live", "1")], functions)
    assert before == {"consumer": "1", "decisions": "1", "batch": "1"}
    assert roll_back(before, [Release("not-yet", "live", "1")], lambda_client=functions) == []


def test_the_cli_records_where_the_aliases_stood_then_rolls_back_to_it(functions, tmp_path):
    from click.testing import CliRunner

    from rides.cli import main

    plan = tmp_path / "releases.json"
    plan.write_text(json.dumps([r.__dict__ for r in releases(groups=())]))
    before = tmp_path / "before.json"
    result = CliRunner().invoke(main, ["release", str(plan), "--before-out", str(before)])
    assert result.exit_code == 0, result.output
    assert json.loads(before.read_text()) == {"consumer": "1", "decisions": "1", "batch": "1"}
    assert live(functions, "batch") == "2"
    result = CliRunner().invoke(main, ["release", str(plan), "--roll-back-to", str(before)])
    assert result.exit_code == 0 and "rolled back batch:live -> 1" in result.output
    assert live(functions, "consumer") == "1"
