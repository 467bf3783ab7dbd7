"""Move each function's `live` alias to the version an apply published, and back.

Terraform publishes a version per apply and leaves the aliases alone (infra/modules/lambda_release);
this is the step after it. A function with a CodeDeploy deployment group is shifted by CodeDeploy
(canary or linear, watched by the function's alarms, rolled back by CodeDeploy when one fires); one
without (the local stack, the monthly batch job) has its alias moved directly. Every deployment
is started before any is waited on, so a canary's minutes are paid once, not once per function.
Where the aliases stood before is recorded first: when a release or the smoke test after it
fails, `roll_back` puts every alias back, whatever CodeDeploy did or did not do.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rides import RidesError

# CodeDeploy's deployment states that do not change any more.
DONE = {"Succeeded", "Failed", "Stopped"}


class ReleaseFailed(RidesError):
    """A release did not reach all its functions; the message says which and why."""


@dataclass(frozen=True)
class Release:
    """One function's alias and the version to serve (Terraform's `releases` output)."""

    function_name: str
    alias: str
    version: str
    application: str | None = None
    deployment_group: str | None = None

    @classmethod
    def from_output(cls, entry: dict) -> Release:
        return cls(
            function_name=entry["function_name"],
            alias=entry["alias"],
            version=str(entry["version"]),
            application=entry.get("application"),
            deployment_group=entry.get("deployment_group"),
        )


@dataclass
class Shift:
    """What a release did to one alias."""

    release: Release
    from_version: str
    deployment_id: str | None = None
    status: str = "Pending"
    reason: str = ""

    @property
    def moved(self) -> bool:
        return self.from_version != self.release.version


@dataclass
class Outcome:
    shifts: list[Shift] = field(default_factory=list)

    @property
    def failed(self) -> list[Shift]:
        return [s for s in self.shifts if s.status != "Succeeded"]

    def summary(self) -> str:
        return "\n".join(
            f"{s.release.function_name}:{s.release.alias} {s.from_version} -> {s.release.version}: {s.status}"
            + (f" (deployment {s.deployment_id})" if s.deployment_id else "")
            + (f": {s.reason}" if s.reason else "")
            for s in self.shifts
        )


def load_releases(entries: Iterable[dict]) -> list[Release]:
    return [Release.from_output(entry) for entry in entries]


def serving(releases: Iterable[Release], lambda_client) -> dict[str, str]:
    """The version each alias serves now, by function (a function not created yet is absent)."""
    found = {}
    for release in releases:
        try:
            alias = lambda_client.get_alias(FunctionName=release.function_name, Name=release.alias)
        except lambda_client.exceptions.ResourceNotFoundException:
            continue
        found[release.function_name] = alias["FunctionVersion"]
    return found


def appspec(release: Release, current: str) -> str:
    """The AppSpec of a Lambda deployment: shift `alias` from `current` to the release's version."""
    return json.dumps(
        {
            "version": 0.0,
            "Resources": [
                {
                    release.function_name: {
                        "Type": "AWS::Lambda::Function",
                        "Properties": {
                            "Name": release.function_name,
                            "Alias": release.alias,
                            "CurrentVersion": current,
                            "TargetVersion": release.version,
                        },
                    }
                }
            ],
        }
    )


def release(
    releases: list[Release],
    *,
    lambda_client,
    codedeploy_client,
    before: dict[str, str] | None = None,
    timeout: float = 3600.0,
    poll_seconds: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Shift every alias to its release's version; raise ReleaseFailed unless all succeeded."""
    before = serving(releases, lambda_client) if before is None else before
    outcome = Outcome()
    for item in releases:
        shift = Shift(item, from_version=before.get(item.function_name, item.version))
        outcome.shifts.append(shift)
        if not shift.moved:
            shift.status = "Succeeded"
        elif item.deployment_group:
            content = appspec(item, shift.from_version)
            shift.deployment_id = codedeploy_client.create_deployment(
                applicationName=item.application,
                deploymentGroupName=item.deployment_group,
                revision={
                    "revisionType": "AppSpecContent",
                    "appSpecContent": {"content": content, "sha256": hashlib.sha256(content.encode()).hexdigest()},
                },
                description=f"{item.function_name}:{item.alias} {shift.from_version} -> {item.version}",
            )["deploymentId"]
            shift.status = "Created"
        else:
            lambda_client.update_alias(
                FunctionName=item.function_name,
                Name=item.alias,
                FunctionVersion=item.version,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )
            shift.status = "Succeeded"
    _wait(outcome, codedeploy_client, timeout=timeout, poll_seconds=poll_seconds, sleep=sleep, clock=clock)
    if outcome.failed:
        raise ReleaseFailed(f"release failed:\n{outcome.summary()}")
    return outcome


def _wait(outcome: Outcome, codedeploy_client, *, timeout, poll_seconds, sleep, clock) -> None:
    deadline = clock() + timeout
    pending = [s for s in outcome.shifts if s.deployment_id and s.status not in DONE]
    while pending:
        for shift in pending:
            info = codedeploy_client.get_deployment(deploymentId=shift.deployment_id)["deploymentInfo"]
            shift.status = info["status"]
            error = info.get("errorInformation") or {}
            shift.reason = error.get("message", "")
        pending = [s for s in pending if s.status not in DONE]
        if pending and clock() >= deadline:
            for shift in pending:
                # Stopped with rollback: CodeDeploy returns the alias to the version it served.
                codedeploy_client.stop_deployment(deploymentId=shift.deployment_id, autoRollbackEnabled=True)
                shift.status, shift.reason = "Stopped", f"not done within {timeout:.0f}s"
            return
        if pending:
            sleep(poll_seconds)


def roll_back(before: dict[str, str], releases: list[Release], *, lambda_client) -> list[str]:
    """Put every alias back on the version it served before the release (all of its traffic).

    Functions that did not exist before are left alone: there is nothing to go back to (the
    deploy's rollback apply switches their triggers off).
    """
    done = []
    for item in releases:
        version = before.get(item.function_name)
        if version is None:
            continue
        lambda_client.update_alias(
            FunctionName=item.function_name,
            Name=item.alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}},
        )
        done.append(f"{item.function_name}:{item.alias} -> {version}")
    return done
