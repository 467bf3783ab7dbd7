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
        print(json.dumps({{"input_stream": "ride-events-x", "consumer_function": "ride-duration-consumer-x",
                          "completions_stream": "ride-completions-x", "evaluations_table": "ride-evaluations-x"}}))
    elif "output" in args and "web_service_url" in args:
        print(json.dumps("https://abc.lambda-url.eu-west-1.on.aws/"))
    elif "output" in args and "-json" in args:
        print(answer("outputs.json", "{{}}"))
    elif "output" in args and "model_bucket" in args:
        print("rides-models-prod")
    elif "output" in args:
        print("123456789012.dkr.ecr.us-east-1.amazonaws.com/ride-duration-consumer")
elif name == "aws":
    if args[:2] == ["sts", "get-caller-identity"]:
        print(answer("account", "123456789012"))
    if args[:2] == ["ecr", "describe-images"]:
        # the registry: tag -> digest, what was pushed or copied (images.json in FAKE_DIR)
        tag = args[args.index("--image-ids") + 1].split("=", 1)[1]
        digest = json.loads(answer("images.json", "{{}}")).get(tag)
        if digest is None:
            print("An error occurred (ImageNotFoundException) when calling DescribeImages", file=sys.stderr)
            sys.exit(254)
        print(digest)
    if args[:2] == ["ecr", "get-login-password"]:
        print("password")
elif name == "docker" and "--password-stdin" in args:
    sys.stdin.read()
elif name == "docker" and args[:3] == ["buildx", "imagetools", "inspect"]:
    print(json.dumps({{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + "ab" * 32}}))
elif name == "docker" and args[:1] == ["push"]:
    images = json.loads(answer("images.json", "{{}}"))
    tag = args[1].rsplit(":", 1)[1]
    images[tag] = "sha256:" + format(len(images) + 1, "x") * 64
    open(os.path.join(state, "images.json"), "w").write(json.dumps(images))
elif name == "docker" and args[:3] == ["buildx", "imagetools", "create"]:
    # a copy by digest: the tag now names the source's digest (or another, to test the check)
    images = json.loads(answer("images.json", "{{}}"))
    tag = args[args.index("--tag") + 1].rsplit(":", 1)[1]
    images[tag] = answer("copy-changes-digest", "") or args[-1].rsplit("@", 1)[1]
    open(os.path.join(state, "images.json"), "w").write(json.dumps(images))
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
        record = args[args.index("--record") + 1]
        with open(os.path.join(state, "smoke-record.json"), "w") as out:
            out.write(open(record).read())
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
                "AWS_REGION": "eu-west-1",
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


def served(call: list[str], model: str = "ride-duration") -> dict | None:
    """One model's entry in the `models` map a terraform call was given."""
    return json.loads(var(call, "models") or "{}").get(model)


def test_staging_deploys_what_staging_points_to_in_order_and_records_it(fakes):
    result = fakes["run"]("stg")
    assert result.returncode == 0, result.stderr
    calls = fakes["calls"]()
    steps = [c[0] + " " + next((a for a in c[1:] if not a.startswith("-")), "") for c in calls]
    assert steps.count("docker login") == 1  # piped from `aws ecr get-login-password`: either may log first
    build = [
        "aws ecr",
        "docker buildx",
        "docker build",
        "docker push",
        "aws ecr",
    ]  # not there, base, build, push, digest
    assert [step for step in steps if step != "docker login"] == [
        "aws sts",  # the account: the state bucket's name
        "rides resolve",
        "rides resolve",
        "rides resolve",
        "rides resolve",  # the web service's quick model
        "rides resolve",  # the shadow, by its own alias
        "terraform init",
        "terraform output",
        "terraform apply",  # ECR and bucket first
        "terraform output",
        "aws ecr",  # login
        *build,
        *build,
        *build,  # the web image
        "terraform apply",  # everything, with the models: publishes versions, moves no alias
        "terraform output",  # what to release
        "terraform output",  # the environment's names, for the rides CLI
        "terraform output",  # the web service's URL, for the smoke test
        "rides release",  # each `live` alias to its new version (CodeDeploy)
        "rides smoke",
    ]
    assert (fakes["state"] / "smoke-env").read_text() == "ride-events-x"  # the smoke test uses them
    [apply] = applies(calls)
    assert (
        served(apply)["version"] == served(apply, "ride-fare")["version"] == "3" and var(apply, "image_tag") == "abc123"
    )
    assert json.loads(var(apply, "models")) == {  # every model, one map: the stream's, the quick one, the shadow
        **{
            m: {"uri": f"s3://rides-models-stg/mlflow/{m}/v3", "version": "3"}
            for m in ("ride-duration", "ride-fare", "ride-tip", "ride-duration-quick")
        },
        "ride-duration@shadow": {"uri": "s3://rides-models-stg/mlflow/shadow/v4", "version": "4"},
    }
    record = json.loads((fakes["tmp"] / "record-stg.json").read_text())
    assert record["smoke_test"] == "passed" and record["models"]["ride-tip"]["version"] == "3"
    # Every image is built for Lambda's platform as a plain image (no manifest list), FROM its
    # base's digest, and the record says which.
    digest = "sha256:" + "ab" * 32
    builds = [c for c in calls if c[:2] == ["docker", "build"]]
    assert all(c[2:5] == ["--platform", "linux/amd64", "--provenance=false"] for c in builds)
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
    # ... and each image pushed, by digest: the functions run exactly those, and prod copies them
    pushed = json.loads((fakes["state"] / "images.json").read_text())
    repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ride-duration-consumer"
    assert record["images"] == {tag: {"repository": repository, "digest": d} for tag, d in pushed.items()}
    assert json.loads(var(apply, "image_digests")) == pushed
    assert (
        record["commit"]
        == subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    )
    # one region, from AWS_REGION; the state bucket named by the account and region
    assert var(apply, "aws_region") == "eu-west-1"
    [init] = [c for c in calls if c[:3] == ["terraform", "-chdir=infra", "init"]]
    assert "-backend-config=bucket=rides-terraform-state-123456789012-eu-west-1" in init
    assert "-backend-config=region=eu-west-1" in init
    # the smoke test checks the recorded versions and asks the web service (a function URL)
    [smoke] = [c for c in calls if c[:2] == ["rides", "smoke"]]
    assert smoke[smoke.index("--web-url") + 1] == "https://abc.lambda-url.eu-west-1.on.aws/"
    assert json.loads((fakes["state"] / "smoke-record.json").read_text())["models"]["ride-fare"]["version"] == "3"


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
    (fakes["state"] / "images.json").write_text("{}")  # prod's own repository: empty

    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record), IMAGE_TAG="ignored")
    assert result.returncode == 0, result.stderr
    calls = fakes["calls"]()
    assert not [c for c in calls if c[:2] == ["rides", "resolve"]]
    [apply] = applies(calls)
    assert served(apply)["version"] == "3" and var(apply, "image_tag") == "abc123"
    smoke = next(i for i, c in enumerate(calls) if c[:2] == ["rides", "smoke"])
    promotions = [i for i, c in enumerate(calls) if c[:2] == ["rides", "promote"]]
    assert len(promotions) == 4 and min(promotions) > smoke  # the three stream models and the quick one
    assert all(calls[i][calls[i].index("--version") + 1] == "3" for i in promotions)
    assert all("--force" in calls[i] for i in promotions)  # they serve already: the alias records it
    # staging's images, copied by digest: prod builds nothing, and runs exactly those digests
    assert not [c for c in calls if c[:2] == ["docker", "build"]]
    staged = json.loads(record.read_text())["images"]
    copies = [c for c in calls if c[:3] == ["docker", "buildx", "imagetools"] and "create" in c]
    assert sorted(c[-1] for c in copies) == sorted(f"{i['repository']}@{i['digest']}" for i in staged.values())
    assert json.loads(var(apply, "image_digests")) == {tag: i["digest"] for tag, i in staged.items()}
    prod_record = json.loads((fakes["tmp"] / "record-prod.json").read_text())
    assert prod_record["images"] == staged and prod_record["commit"] == json.loads(record.read_text())["commit"]


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
    assert served(new)["version"] == "3"
    assert served(rollback)["version"] == "2" and var(rollback, "image_tag") == "old999"
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
    assert [c[:2] for c in fakes["calls"]()] == [["aws", "sts"]]  # who we are, nothing more


def test_prod_in_its_own_account_serves_the_recorded_versions_from_its_own_bucket(fakes, tmp_path):
    carried = tmp_path / "carried"
    carried.mkdir()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    record = {
        "environment": "stg",
        "image_tag": "abc123",
        "smoke_test": "passed",
        "commit": commit,
        "images": {
            tag: {
                "repository": "111111111111.dkr.ecr.eu-west-1.amazonaws.com/ride-duration-consumer-stg",
                "digest": "sha256:" + c * 64,
            }
            for tag, c in (("abc123", "1"), ("batch-abc123", "2"), ("web-abc123", "3"))
        },
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
    [init] = [c for c in calls if c[:3] == ["terraform", "-chdir=infra", "init"]]
    assert "-backend-config=backend/prod-account.hcl" in init
    # the state bucket is this account's own, by its name
    assert "-backend-config=bucket=rides-terraform-state-123456789012-eu-west-1" in init
    bootstrap = next(i for i, c in enumerate(calls) if "-target=module.ecr" in c)
    imported = next(i for i, c in enumerate(calls) if c[:3] == ["rides", "models", "import"])
    [apply] = applies(calls)
    assert bootstrap < imported < calls.index(apply)
    assert served(apply) == {"uri": "s3://rides-models-prod/mlflow/ride-duration/v3", "version": "3"}
    assert "-var-file=vars/prod-account.tfvars" in apply
    # the images come from staging's account's registry, by digest
    copies = [c[-1] for c in calls if c[:3] == ["docker", "buildx", "imagetools"] and "create" in c]
    assert copies == [f"{i['repository']}@{i['digest']}" for i in record["images"].values()]


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


def staged_record(fakes) -> Path:
    assert fakes["run"]("stg").returncode == 0
    (fakes["tmp"] / "calls.log").unlink()
    return fakes["tmp"] / "record-stg.json"


def test_prod_refuses_a_checkout_that_is_not_the_commit_staging_deployed(fakes, tmp_path):
    record = json.loads(staged_record(fakes).read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**record, "commit": "0" * 40}))
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(other))
    assert result.returncode != 0 and f"but staging deployed and tested {'0' * 40}" in result.stderr
    assert [c[:2] for c in fakes["calls"]()] == [["aws", "sts"]]


def test_prod_refuses_a_record_without_image_digests(fakes, tmp_path):
    record = json.loads(staged_record(fakes).read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in record.items() if k != "images"}))
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(old))
    assert result.returncode != 0 and "names no image digests" in result.stderr


def test_prod_refuses_an_image_that_is_not_the_digest_staging_tested(fakes):
    record = staged_record(fakes)
    (fakes["state"] / "copy-changes-digest").write_text("sha256:" + "9" * 64)  # e.g. re-wrapped in an index
    fakes["serving"]({"ride-duration": "2", "ride-fare": "2", "ride-tip": "2"})
    images = json.loads((fakes["state"] / "images.json").read_text())
    (fakes["state"] / "images.json").write_text("{}")  # prod's repository is empty
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record))
    assert result.returncode != 0 and "not the sha256:" in result.stderr and "staging tested" in result.stderr
    assert applies(fakes["calls"]()) == []  # nothing applied with a wrong image
    # a tag already there with another digest is refused the same way
    (fakes["state"] / "copy-changes-digest").unlink()
    (fakes["state"] / "images.json").write_text(json.dumps({tag: "sha256:" + "8" * 64 for tag in images}))
    result = fakes["run"]("prod", PROMOTE="1", DEPLOY_RECORD=str(record))
    assert result.returncode != 0 and "staging tested" in result.stderr


def test_without_a_region_nothing_happens(fakes):
    result = fakes["run"]("stg", AWS_REGION="", AWS_DEFAULT_REGION="")
    assert result.returncode != 0 and "set AWS_REGION" in result.stderr
    assert fakes["calls"]() == []


def test_the_registry_promotion_skips_the_shadow_and_records_what_serves(fakes, tmp_path):
    """scripts/promote_record.sh: what deploy.sh runs after prod's smoke test, and what cd.yml
    runs with staging's credentials when prod is in an account of its own."""
    record = tmp_path / "deploy-record-prod.json"
    models = {m: {"uri": f"s3://b/{m}", "version": "3"} for m in ("ride-duration", "ride-fare", "ride-tip")}
    models["ride-duration@shadow"] = {"uri": "s3://b/shadow", "version": "4"}
    record.write_text(json.dumps({"environment": "prod", "models": models}))
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "promote_record.sh"), str(record)],
        env={
            **os.environ,
            "PATH": f"{fakes['tmp'] / 'bin'}:{os.environ['PATH']}",
            "RIDES": str(fakes["tmp"] / "bin" / "rides"),
            "FAKE_DIR": str(fakes["state"]),
            "FAKE_LOG": str(fakes["tmp"] / "calls.log"),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    promoted = [c for c in fakes["calls"]() if c[:2] == ["rides", "promote"]]
    assert [(c[c.index("--model-name") + 1], c[c.index("--version") + 1]) for c in promoted] == [
        ("ride-duration", "3"),
        ("ride-fare", "3"),
        ("ride-tip", "3"),
    ]
    assert all(c[c.index("--alias") + 1] == "production" and "--force" in c for c in promoted)


def test_the_pipeline_runs_the_tested_scripts_in_the_region_it_is_given():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "cd.yml").read_text())
    steps = workflow["jobs"]["production"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(r.strip() == "scripts/promote_record.sh deploy-record-prod.json" for r in runs)
    assert any(r.strip() == "scripts/login_record_registries.sh deploy-record-stg.json" for r in runs)
    credentials = [
        s for job in workflow["jobs"].values() for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")
    ]
    assert credentials and all(s["with"]["aws-region"] == "${{ vars.AWS_REGION }}" for s in credentials)
    assert "us-east-1" not in (ROOT / ".github" / "workflows" / "cd.yml").read_text()
