"""infra/ applied for real: two environments side by side on LocalStack, each with its own
local state, then a ride round trip through each one's Terraform-made functions (LocalStack's
own event source mappings calling the `live` aliases), a second plan that must show nothing
but known emulator artifacts, and a destroy.

What LocalStack cannot host here is either sent to the moto server (DynamoDB, whose LocalStack
implementation is a download these machines cannot make; ECR, a paid LocalStack feature) or
switched off by vars/localstack.tfvars (CodeDeploy, RDS, SageMaker: paid features; the
aliases then move directly). The web service and the batch job need container images, so
they are not applied (no image_tag): tests/test_terraform_validate.py plans them.

The functions are the zip variant (lambda_zip). On the host-mode LocalStack the code alone is
enough (the project's executor runs it on this Python); a LocalStack in a container
(--localstack-endpoint, as in CI) needs the full package: --lambda-zip build/lambda.zip.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from rides.data import read_trips
from rides.local.producer import produce, ride_events
from rides.local.reader import collect_decisions, collect_predictions
from rides.operate.stream_reader import StreamReader
from tests.helpers import terraform_check, upload_dir

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

# A second environment beside staging: its own names, bucket and state.
ENVIRONMENTS = {"stg": {}, "qa": {"environment": "qa", "model_bucket_name": "rides-models-qa"}}
RIDES_PER_ENVIRONMENT = 60
# Resource types whose service the moto server hosts (see the module's docstring).
ON_MOTO = {"dynamodb": ("aws_dynamodb_",), "ecr": ("aws_ecr_",)}
# What a second plan may still want to change, and why: the emulator, not the Terraform.
EMULATOR_ARTIFACTS = {
    ("aws_kinesis_stream", "tags_all"): "LocalStack's Kinesis does not keep a stream's tags",
}
ARTIFACTS = set(EMULATOR_ARTIFACTS)


def moto_services(localstack) -> dict[str, tuple[str, ...]]:
    # LocalStack in a container hosts DynamoDB itself (its image downloads DynamoDB Local).
    return ON_MOTO if localstack.pid else {"ecr": ON_MOTO["ecr"]}


@pytest.fixture(scope="module")
def terraform():
    found, why = terraform_check.find()
    if found is None:
        pytest.skip(f"terraform apply: {why}")
    return found


@pytest.fixture(scope="module")
def lambda_zip(request, tmp_path_factory) -> Path:
    given = request.config.getoption("--lambda-zip")
    if given:
        return Path(given).resolve()
    from rides.packaging import code_zip

    path = tmp_path_factory.mktemp("zip") / "lambda.zip"
    path.write_bytes(code_zip())
    return path


def model_uris(bucket: str) -> dict[str, str]:
    """Where each consumer's model will be: the variables the apply gets, uploaded after it."""
    return {name: f"s3://{bucket}/mlflow/1/{name}/artifacts" for name in ("ride-duration", "ride-fare", "ride-tip")}


def variables(environment: str, overrides: dict, zip_path: Path) -> tuple[list[str], dict[str, str]]:
    bucket = overrides.get("model_bucket_name", f"rides-models-{environment}")
    uris = model_uris(bucket)
    return ["vars/stg.tfvars", "vars/localstack.tfvars"], {
        **overrides,
        "plain_names": "false",  # two environments in one account: the real names
        "lambda_zip": str(zip_path),
        "models": json.dumps({name: {"uri": uri, "version": "1"} for name, uri in uris.items()}),
        "decision_timeout_seconds": "600",  # decisions come from complete rides, not the sweep
    }


@pytest.fixture(scope="module")
def applied(
    terraform, localstack, emulator, lambda_zip, model_dirs, tmp_path_factory, monkeypatch_module, terraform_report
):
    """Both environments applied side by side (in parallel, as two operators would), each
    one's models then put where its variables say; destroyed at the end."""
    endpoints = {service: emulator.endpoint for service in moto_services(localstack)}
    for key, value in localstack.env().items():
        monkeypatch_module.setenv(key, value)
    s3 = boto3.client("s3")
    workspaces = {
        environment: terraform_check.Workspace(
            terraform, localstack.endpoint, tmp_path_factory.mktemp(f"apply-{environment}"), endpoints
        )
        for environment in ENVIRONMENTS
    }
    arguments = {
        environment: terraform_check.arguments(*variables(environment, overrides, lambda_zip))
        for environment, overrides in ENVIRONMENTS.items()
    }

    def apply(environment: str) -> dict:
        workspace, started = workspaces[environment], time.monotonic()
        workspace.apply(arguments[environment])
        outputs = workspace.outputs()
        for name, uri in model_uris(outputs["model_bucket"]).items():
            bucket, prefix = uri.removeprefix("s3://").split("/", 1)
            upload_dir(s3, model_dirs[name], bucket, prefix, create=False)
        return {"outputs": outputs, "resources": workspace.managed_resources(), "seconds": time.monotonic() - started}

    def destroy(environment: str) -> None:
        workspace = workspaces[environment]
        # The model bucket keeps its versions and has no force_destroy (prod's models must not
        # go with a stray destroy): take out what this test put there, as an operator would.
        empty_prefix(s3, workspace.outputs().get("model_bucket"), "mlflow/")
        workspace.destroy(arguments[environment])
        left = workspace.managed_resources()
        assert not left, f"{environment}: destroy left {[r['address'] for r in left]}"
        terraform_report.append(f"terraform destroy of {environment!r} on LocalStack: nothing left in its state")

    with ThreadPoolExecutor(len(ENVIRONMENTS)) as pool:
        try:
            futures = {environment: pool.submit(apply, environment) for environment in ENVIRONMENTS}
            yield {
                environment: {**future.result(), "workspace": workspace, "args": arguments[environment]}
                for (environment, future), workspace in zip(futures.items(), workspaces.values(), strict=True)
            }
        finally:
            for future in [pool.submit(destroy, environment) for environment in ENVIRONMENTS]:
                future.result()


def empty_prefix(s3, bucket: str | None, prefix: str) -> None:
    if bucket is None:
        return
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        versions = page.get("Versions", []) + page.get("DeleteMarkers", [])
        if versions:
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_two_environments_apply_serve_replan_and_destroy(applied, localstack, terraform_report):
    kinesis = boto3.client("kinesis", config=Config(retries={"mode": "standard", "max_attempts": 10}))
    frame = read_trips("2021-02").head(RIDES_PER_ENVIRONMENT * len(applied))
    sent: dict[str, set[str]] = {}
    for index, (environment, done) in enumerate(applied.items()):
        names, resources = done["outputs"]["names"], done["resources"]
        # No name is shared: each environment's resources are its own.
        assert all(f"-{environment}" in names[key] for key in ("input_stream", "predictions_stream", "decisions_table"))
        rows = frame.iloc[index * RIDES_PER_ENVIRONMENT : (index + 1) * RIDES_PER_ENVIRONMENT]
        events = list(ride_events(rows, first_id=1 + index * 100_000))
        sent[environment] = {key for key, _ in events}
        produce(kinesis, names["input_stream"], events, progress=False)
        on_moto = [r for r in resources if r["type"].startswith(sum(moto_services(localstack).values(), ()))]
        terraform_report.append(
            f"terraform apply of infra/ for {environment!r} on LocalStack: {len(resources)} resources applied "
            f"({len(resources) - len(on_moto)} on LocalStack, {len(on_moto)} on moto: "
            f"{', '.join(sorted(moto_services(localstack)))}) in {done['seconds']:.0f} s"
        )

    models = ("ride-duration", "ride-fare", "ride-tip")
    for environment, done in applied.items():
        names = done["outputs"]["names"]
        by_ride = collect_predictions(
            StreamReader(kinesis, names["predictions_stream"]), sent[environment], 240, models=models
        )
        # Every ride of this environment predicted by its three consumers, and none of the other's.
        assert set(by_ride) == sent[environment]
        assert all({p[0]["model"] for p in by_ride[ride]} == set(models) for ride in sent[environment])
        decisions = collect_decisions(StreamReader(kinesis, names["decisions_stream"]), sent[environment], 180)
        assert set(decisions) == sent[environment]
        assert all(d["complete"] and d["decision"] in ("accept", "review") for d in decisions.values())

    seen: set[tuple[str, str]] = set()
    for environment, done in applied.items():
        pending = terraform_check.changes(done["workspace"].plan(done["args"]))
        explained = [
            c for c in pending if c["actions"] == ["update"] and {(c["type"], a) for a in c["attributes"]} <= ARTIFACTS
        ]
        unexplained = [c for c in pending if c not in explained]
        assert not unexplained, (
            f"{environment}: the second plan wants changes the emulator does not explain: "
            + "; ".join(f"{c['address']} {c['actions']} {c['attributes']}" for c in unexplained)
        )
        seen |= {(c["type"], a) for c in explained for a in c["attributes"]}
    terraform_report.append(
        f"terraform on LocalStack: {RIDES_PER_ENVIRONMENT} rides per environment predicted by 3 consumers and "
        "decided through the Terraform-made functions; the second plan showed "
        + (
            "; ".join(f"{kind}.{attribute} ({EMULATOR_ARTIFACTS[kind, attribute]})" for kind, attribute in sorted(seen))
            or "no change"
        )
    )
