"""scripts/deploy.sh against recording fakes of terraform, aws, docker and the registry (`rides`)
on PATH: the order of its calls, and what it does when a step fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each fake appends its argv (one JSON list per line) to $FAKE_LOG and answers from $FAKE_DIR.
FAKE = r"""#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
state = os.environ["FAKE_DIR"]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([name, *args]) + "\n")

def answer(file, default=""):
    path = os.path.join(state, file)
    return open(path).read() if os.path.exists(path) else default

if name == "terraform":
    if "output" in args and "releases" in args:
        print(json.dumps([{{"function_name": "ride-duration-consumer-x", "alias": "live", "version": "7"}}]))
    elif "output" in args and "names" in args:
        print(json.dumps({{"input_stream": "ride-events-x", "consumer_function": "ride-duration-consumer-x"}}))
    elif "output" in args and "-json" in args:
        print(answer("outputs.json", "{{}}"))
    elif "output" in args and "model_bucket" in args:
        print("rides-models-prod")
    elif "output" in args:
        print("123456789012.dkr.ecr.us-east-1.amazonaws.com/ride-duration-consumer")
elif name == "aws":
    if args[:2] == ["configure", "get"]:
        sys.exit(1)
    if args[:2] == ["ecr", "describe-images"]:
        print("An error occurred (ImageNotFoundException) when calling DescribeImages", file=sys.stderr)
        sys.exit(254)
    if args[:2] == ["ecr", "get-login-password"]:
        print("password")
elif name == "docker" and "--password-stdin" in args:
    sys.stdin.read()
elif name == "docker" and args[:3] == ["buildx", "imagetools", "inspect"]:
    print(json.dumps({{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + "ab" * 32}}))
elif name == "rides":
    if args[0] == "resolve":
        if os.path.exists(os.path.join(state, "registry-down")):
            print("Error: the registry failed to resolve", file=sys.stderr)
            sys.exit(1)
        registry = json.loads(answer("registry.json", "{{}}"))
        print(json.dumps(registry.get(args[-1], {{}})))
    if args[:2] == ["models", "import"]:
        record = json.load(open(os.path.join(args[args.index("--from") + 1], "record.json")))
        bucket = args[args.index("--bucket") + 1]
        for entry in record["models"].values():
            entry["uri"] = "s3://" + bucket + "/" + entry.pop("key")
        json.dump(record, open(args[args.index("--record-out") + 1], "w"))
    if args[0] == "release" and "--before-out" in args:
        with open(args[args.index("--before-out") + 1], "w") as out:
            out.write(json.dumps({{"ride-duration-consumer-x": "6"}}))
        if os.path.exists(os.path.join(state, "release-fails")):
            print("Error: release failed: ride-duration-consumer-x:live 6 -> 7: Failed", file=sys.stderr)
            sys.exit(1)
    if args[0] == "smoke":
        with open(os.path.join(state, "smoke-env"), "w") as out:
            out.write(os.environ.get("RIDES_INPUT_STREAM", ""))
    if args[0] == "smoke" and os.path.exists(os.path.join(state, "smoke-fails")):
        print("Error: no prediction within 180s", file=sys.stderr)
        sys.exit(1)
"""

REGISTRY = {
    f"{model}@{alias}": {"name": model, "version": version, "uri": f"s3://rides-models-stg/mlflow/{model}/v{version}"}
    for model in ("ride-duration", "ride-fare", "ride-tip", "ride-duration-quick")
    for alias, version in (("staging", "3"), ("production", "2"))
} | {"ride-duration@shadow": {"name": "ride-duration", "version": "4", "uri": "s3://rides-models-stg/mlflow/shadow/v4"}}


@pytest.fixture
def fakes(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("terraform", "aws", "docker", "rides"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    (state / "registry.json").write_text(json.dumps(REGISTRY))
    log = tmp_path / "calls.log"

    def run(env_name: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "deploy.sh")],
            env={
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "HOME": str(tmp_path),
                "ENV": env_name,
                "IMAGE_TAG": "abc123",
                "RIDES": str(bin_dir / "rides"),
                "MLFLOW_TRACKING_URI": "https://mlflow.example",
                "FAKE_DIR": str(state),
                "FAKE_LOG": str(log),
                "RECORD_OUT": str(tmp_path / f"record-{env_name}.json"),
                **env,
            },
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def serving(models: dict[str, str], image_tag: str = "old999") -> None:
        """What the environment's Terraform state says it serves now."""
        deployed = {
            "image_tag": image_tag,
            "batch_image_tag": f"batch-{image_tag}",
            "models": {m: {"uri": f"s3://rides-models-stg/mlflow/{m}/v{v}", "version": v} for m, v in models.items()},
        }
        (state / "outputs.json").write_text(json.dumps({"deployed": {"value": deployed}}))

    return {"run": run, "calls": calls, "state": state, "serving": serving, "tmp": tmp_path}


def applies(calls) -> list[list[str]]:
    return [c for c in calls if c[0] == "terraform" and "apply" in c and "-target=module.ecr" not in c]


def var(call: list[str], name: str) -> str | None:
    return next(
        (
            call[i + 1].split("=", 1)[1]
            for i, a in enumerate(call[:-1])
            if a == "-var" and call[i + 1].startswith(f"{name}=")
        ),
        None,
    )


def test_staging_deploys_what_staging_points_to_in_order_and_records_it(fakes):
    result = fakes["run"]("stg")
    assert result.returncode == 0, result.stderr
    calls = fakes["calls"]()
    steps = [c[0] + " " + next((a for a in c[1:] if not a.startswith("-")), "") for c in calls]
    assert steps.count("docker login") == 1  # piped from `aws ecr get-login-password`: either may log first
    assert [step for step in steps if step != "docker login"] == [
        "rides resolve",
        "rides resolve",
        "rides resolve",
        "rides resolve",  # the web service's quick model
        "rides resolve",  # the shadow, by its own alias
        "terraform init",
        "terraform output",
        "terraform apply",  # ECR and bucket first
        "terraform output",
        "aws configure",  # the region
        "aws ecr",  # login
        "aws ecr",  # describe-images: not there
        "docker buildx",  # the base image's digest now
        "docker build",
        "docker push",
        "aws ecr",
        "docker buildx",
        "docker build",
        "docker push",
        "aws ecr",  # the web image
        "docker buildx",
        "docker build",
        "docker push",
        "terraform apply",  # everything, with the models: publishes versions, moves no alias
        "terraform output",  # what to release
        "terraform output",  # the environment's names, for the rides CLI
        "rides release",  # each `live` alias to its new version (CodeDeploy)
        "rides smoke",
    ]
    assert (fakes["state"] / "smoke-env").read_text() == "ride-events-x"  # the smoke test uses them
    [apply] = applies(calls)
    assert (
        var(apply, "model_version") == var(apply, "fare_model_version") == "3" and var(apply, "image_tag") == "abc123"
    )
    assert var(apply, "quick_model_uri") == "s3://rides-models-stg/mlflow/ride-duration-quick/v3"
    assert var(apply, "shadow_model_uri") == "s3://rides-models-stg/mlflow/shadow/v4"
    assert var(apply, "shadow_model_version") == "4"
    record = json.loads((fakes["tmp"] / "record-stg.json").read_text())
    assert record["smoke_test"] == "passed" and record["models"]["ride-tip"]["version"] == "3"
    # Every image is built FROM its base's digest, and the record says which.
    digest = "sha256:" + "ab" * 32
    builds = [c for c in calls if c[:2] == ["docker", "build"]]
    assert [c[c.index("--build-arg") + 1] for c in builds] == [
        f"BASE_IMAGE=public.ecr.aws/lambda/python:3.12@{digest}",
        f"BASE_IMAGE=public.ecr.aws/lambda/python:3.12@{digest}",
        f"BASE_IMAGE=python:3.11-slim@{digest}",
    ]
    assert record["base_images"] == {
        "abc123": f"public.ecr.aws/lambda/python:3.12@{digest}",
        "batch-abc123": f"public.ecr.aws/lambda/python:3.12@{digest}",
        "web-abc123": f"python:3.11-slim@{digest}",
    }


def test_an_unreachable_registry_fails_the_deploy_before_anything_changes(fakes):
    (fakes["state"] / "registry-down").touch()
    result = fakes["run"]("stg")
    assert result.returncode != 0 and "cannot read ride-duration@staging from the registry" in result.stderr
    assert not [c for c in fakes["calls"]() if c[0] == "terraform"]  # no apply that would disable a consumer


def test_a_served_model_whose_alias_went_missing_is_not_silently_disabled(fakes):
    registry = {k: v for k, v in REGISTRY.items() if k != "ride-fare@staging"}
    (fakes["state"] / "registry.json").write_text(json.dumps(registry))
    fakes["serving"]({"ride-duration": "2", "ride-fare": "2", "ride-tip": "2"})
    result = fakes["run"]("stg")
    assert result.returncode != 0 and "ride-fare is served now but has nothing to deploy" in result.stderr
    assert applies(fakes["calls"]()) == []


def test_prod_deploys_exactly_the_recorded_staging_versions_and_moves_the_alias_after_the_smoke_test(fakes):
    assert fakes["run"]("stg").returncode == 0
    record = fakes["tmp"] / "record-stg.json"
    # Meanwhile someone trains and points @staging at version 9: prod must not pick it up.
    moved = {k: {**v, "version": "9"} if k.endswith("@staging") else v for k, v in REGISTRY.items()}
    (fakes["state"] / "registry.json").write_text(json.dumps(moved))
    fakes["serving"]({"ride-duration": "2", "ride-fare": "2", "ride-tip": "2"})
    (fakes["tmp"] / "calls.log").unlink()

    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record), IMAGE_TAG="ignored")
    assert result.returncode == 0, result.stderr
    calls = fakes["calls"]()
    assert not [c for c in calls if c[:2] == ["rides", "resolve"]]
    [apply] = applies(calls)
    assert var(apply, "model_version") == "3" and var(apply, "image_tag") == "abc123"
    smoke = calls.index(["rides", "smoke", "--timeout", "180"])
    promotions = [i for i, c in enumerate(calls) if c[:2] == ["rides", "promote"]]
    assert len(promotions) == 4 and min(promotions) > smoke  # the three stream models and the quick one
    assert all(calls[i][calls[i].index("--version") + 1] == "3" for i in promotions)


def test_a_failed_smoke_test_rolls_back_moves_no_alias_and_exits_non_zero(fakes):
    assert fakes["run"]("stg").returncode == 0
    record = fakes["tmp"] / "record-stg.json"
    fakes["serving"]({"ride-duration": "2", "ride-fare": "2", "ride-tip": "2"}, image_tag="old999")
    (fakes["state"] / "smoke-fails").touch()
    (fakes["tmp"] / "calls.log").unlink()

    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record))
    assert result.returncode != 0 and "smoke test failed; rolled back, no alias moved" in result.stderr
    assert_rolled_back(fakes["calls"]())


def assert_rolled_back(calls) -> None:
    """The aliases back where the release found them, then the configuration that served before."""
    new, rollback = applies(calls)
    assert var(new, "model_version") == "3"
    assert var(rollback, "model_version") == "2" and var(rollback, "image_tag") == "old999"
    [back] = [c for c in calls if c[:2] == ["rides", "release"] and "--roll-back-to" in c]
    assert calls.index(back) < calls.index(rollback)
    [moved] = [c for c in calls if c[:2] == ["rides", "release"] and "--before-out" in c]
    # It rolls back to exactly what the release recorded before it moved anything.
    assert back[back.index("--roll-back-to") + 1] == moved[moved.index("--before-out") + 1]
    assert not [c for c in calls if c[:2] == ["rides", "promote"]]


def test_a_release_that_codedeploy_rolled_back_fails_the_deploy_before_the_smoke_test(fakes):
    assert fakes["run"]("stg").returncode == 0
    record = fakes["tmp"] / "record-stg.json"
    fakes["serving"]({"ride-duration": "2", "ride-fare": "2", "ride-tip": "2"}, image_tag="old999")
    (fakes["state"] / "release-fails").touch()
    (fakes["tmp"] / "calls.log").unlink()

    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record))
    assert result.returncode != 0 and "the release did not complete; rolled back, no alias moved" in result.stderr
    calls = fakes["calls"]()
    assert not [c for c in calls if c[:2] == ["rides", "smoke"]]
    assert_rolled_back(calls)


def test_prod_with_promote_refuses_a_record_that_is_not_a_passed_staging_deploy(fakes, tmp_path):
    record = tmp_path / "bad.json"
    record.write_text(json.dumps({"environment": "stg", "image_tag": "x", "models": {}, "smoke_test": "skipped"}))
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record))
    assert result.returncode != 0 and "staging's smoke test did not pass" in result.stderr
    assert fakes["calls"]() == []


def test_prod_in_its_own_account_serves_the_recorded_versions_from_its_own_bucket(fakes, tmp_path):
    carried = tmp_path / "carried"
    carried.mkdir()
    record = {
        "environment": "stg",
        "image_tag": "abc123",
        "smoke_test": "passed",
        "models": {
            m: {"uri": f"s3://rides-models-stg/mlflow/{m}/v3", "version": "3", "key": f"mlflow/{m}/v3"}
            for m in ("ride-duration", "ride-fare", "ride-tip")
        },
    }
    (carried / "record.json").write_text(json.dumps(record))
    (tmp_path / "stg.json").write_text(json.dumps(record))
    result = fakes["run"](
        "prod",
        PROMOTE="1",
        DEPLOY_RECORD=str(tmp_path / "stg.json"),
        IMPORT_MODELS_FROM=str(carried),
        BACKEND_CONFIG="backend/prod-account.hcl",
        VAR_FILE="vars/prod-account.tfvars",
    )
    assert result.returncode == 0, result.stderr
    calls = fakes["calls"]()
    assert [
        "terraform",
        "-chdir=infra",
        "init",
        "-input=false",
        "-reconfigure",
        "-backend-config=backend/prod-account.hcl",
    ] in calls
    bootstrap = next(i for i, c in enumerate(calls) if "-target=module.ecr" in c)
    imported = next(i for i, c in enumerate(calls) if c[:3] == ["rides", "models", "import"])
    [apply] = applies(calls)
    assert bootstrap < imported < calls.index(apply)
    assert (
        var(apply, "model_uri") == "s3://rides-models-prod/mlflow/ride-duration/v3"
        and var(apply, "model_version") == "3"
    )
    assert "-var-file=vars/prod-account.tfvars" in apply


def test_prod_in_its_own_account_leaves_the_registry_alias_to_the_pipeline(fakes):
    assert fakes["run"]("stg").returncode == 0
    record = fakes["tmp"] / "record-stg.json"
    (fakes["tmp"] / "calls.log").unlink()
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record), MOVE_REGISTRY_ALIAS="0")
    assert result.returncode == 0, result.stderr
    assert not [c for c in fakes["calls"]() if c[:2] == ["rides", "promote"]]
    assert json.loads((fakes["tmp"] / "record-prod.json").read_text())["models"]["ride-duration"]["version"] == "3"


def test_staging_exports_what_it_deployed_only_after_its_smoke_test_passed(fakes, tmp_path):
    assert fakes["run"]("stg", EXPORT_MODELS_TO=str(tmp_path / "out")).returncode == 0
    [export] = [c for c in fakes["calls"]() if c[:3] == ["rides", "models", "export"]]
    assert export[export.index("--to") + 1] == str(tmp_path / "out")
    (fakes["state"] / "smoke-fails").touch()
    (fakes["tmp"] / "calls.log").unlink()
    assert fakes["run"]("stg", EXPORT_MODELS_TO=str(tmp_path / "out")).returncode != 0
    assert not [c for c in fakes["calls"]() if c[:3] == ["rides", "models", "export"]]
