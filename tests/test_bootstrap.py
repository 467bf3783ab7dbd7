"""infra/bootstrap: the state bucket and the deploy roles, planned against moto and held to what
the deploy does: every AWS call scripts/deploy.sh makes (the recording fakes list them) and
every kind of resource infra/ manages is allowed, on this environment's resources and not on
another's."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from tests.helpers import terraform_check
from tests.test_deploy import fakes  # noqa: F401 - the deploy's recording fakes
from tests.test_infra import INFRA, blocks_of

ACCOUNT, REGION = "123456789012", "eu-west-1"


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """Each environment's deploy role: (trust policy, permissions policy), as planned."""
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform plan: {why}")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        workspace = terraform_check.Workspace(
            terraform, f"http://{host}:{port}", tmp_path_factory.mktemp("bootstrap"), directory="bootstrap"
        )
        # With the account's OIDC provider already there its ARN is known at plan time, and so the
        # trust policy (the provider's own creation is the other branch of one expression).
        plan = workspace.plan(
            [
                *("-var", f"aws_region={REGION}", "-var", "github_repository=acme/rides"),
                *("-var", "create_github_oidc_provider=false"),
            ]
        )
    finally:
        server.stop()
    after = {r["address"]: r["change"]["after"] for r in plan["resource_changes"]}
    return plan, {
        env: (
            json.loads(after[f'aws_iam_role.deploy["{env}"]']["assume_role_policy"]),
            json.loads(after[f'aws_iam_role_policy.deploy["{env}"]']["policy"]),
        )
        for env in ("stg", "prod")
    }


def allows(policy: dict, action: str, resource: str, context: dict | None = None) -> bool:
    """IAM's evaluation for the Allow-only policies here: an action and resource matching a
    statement's patterns, its conditions met by `context`."""
    context = {"aws:RequestedRegion": REGION, **(context or {})}
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        if all(
            key in context
            and any(fnmatch.fnmatchcase(context[key], v) for v in (vals if isinstance(vals, list) else [vals]))
            for test in conditions.values()
            for key, vals in test.items()
        ):
            return True
    return False


def arn(service: str, resource: str, region: str = REGION) -> str:
    if service in ("s3",):
        return f"arn:aws:s3:::{resource}"
    if service == "iam":
        return f"arn:aws:iam::{ACCOUNT}:{resource}"
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"


def the_calls(env: str) -> list[tuple[str, str, dict]]:
    """(IAM action, resource ARN, condition context) of what a deploy of `env` does besides
    Terraform: `aws` (recorded by the fakes), docker against ECR, and the rides commands."""
    repository = arn("ecr", f"repository/ride-duration-consumer-{env}")
    bucket = f"rides-models-{env}-{ACCOUNT}-{REGION}"
    function = arn("lambda", f"function:ride-duration-consumer-{env}")
    return [
        ("sts:GetCallerIdentity", "*", {}),
        ("ecr:GetAuthorizationToken", "*", {}),
        ("ecr:DescribeImages", repository, {}),
        # docker push / buildx imagetools create into the environment's repository
        *[
            (f"ecr:{a}", repository, {})
            for a in (
                "InitiateLayerUpload",
                "UploadLayerPart",
                "CompleteLayerUpload",
                "PutImage",
                "BatchCheckLayerAvailability",
            )
        ],
        # ... and from staging's (prod copies by digest)
        *[
            (f"ecr:{a}", arn("ecr", "repository/ride-duration-consumer-stg"), {})
            for a in ("BatchGetImage", "GetDownloadUrlForLayer")
        ],
        # terraform's state
        ("s3:ListBucket", f"arn:aws:s3:::rides-terraform-state-{ACCOUNT}-{REGION}", {}),
        ("s3:PutObject", f"arn:aws:s3:::rides-terraform-state-{ACCOUNT}-{REGION}/rides/{env}/terraform.tfstate", {}),
        # rides release (rides/models/release.py): the aliases, through CodeDeploy
        ("lambda:GetAlias", f"{function}:live", {}),
        ("lambda:UpdateAlias", f"{function}:live", {}),
        (
            "codedeploy:CreateDeployment",
            arn("codedeploy", f"deploymentgroup:rides-{env}/ride-duration-consumer-{env}"),
            {},
        ),
        (
            "codedeploy:GetDeployment",
            arn("codedeploy", f"deploymentgroup:rides-{env}/ride-duration-consumer-{env}"),
            {},
        ),
        ("codedeploy:GetDeploymentConfig", "*", {}),
        # rides smoke (rides/operate/smoke.py)
        ("kinesis:PutRecord", arn("kinesis", f"stream/ride-events-{env}"), {}),
        ("kinesis:PutRecord", arn("kinesis", f"stream/ride-completions-{env}"), {}),
        ("kinesis:GetRecords", arn("kinesis", f"stream/ride-predictions-{env}"), {}),
        ("kinesis:GetShardIterator", arn("kinesis", f"stream/ride-decisions-{env}"), {}),
        ("kinesis:ListShards", arn("kinesis", f"stream/ride-decisions-{env}"), {}),
        ("dynamodb:GetItem", arn("dynamodb", f"table/ride-evaluations-{env}"), {}),
        ("lambda:InvokeFunctionUrl", arn("lambda", f"function:ride-web-{env}"), {}),
        ("lambda:InvokeFunction", arn("lambda", f"function:ride-web-{env}"), {}),
        # rides models import/export, rides promote's artifact check
        ("s3:PutObject", f"arn:aws:s3:::{bucket}/mlflow/models/m-1/artifacts/MLmodel", {}),
        ("s3:GetObject", f"arn:aws:s3:::rides-models-stg-{ACCOUNT}-{REGION}/mlflow/models/m-1/artifacts/MLmodel", {}),
    ]


def test_only_this_repositorys_jobs_in_the_environment_may_assume_its_role(policies):
    _, roles = policies
    for env, github_environment in (("stg", "staging"), ("prod", "production")):
        trust, _ = roles[env]
        [statement] = trust["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
        conditions = statement["Condition"]["StringEquals"]
        assert conditions["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
        assert (
            conditions["token.actions.githubusercontent.com:sub"] == f"repo:acme/rides:environment:{github_environment}"
        )


def test_the_state_bucket_is_the_one_the_deploy_derives(policies):
    plan, _ = policies
    [bucket] = [r["change"]["after"]["bucket"] for r in plan["resource_changes"] if r["type"] == "aws_s3_bucket"]
    assert bucket == f"rides-terraform-state-{ACCOUNT}-{REGION}"
    script = (Path(__file__).resolve().parents[1] / "scripts" / "deploy.sh").read_text()
    assert 'STATE_BUCKET="${STATE_BUCKET:-${NAME_PREFIX}-terraform-state-${ACCOUNT}-${AWS_REGION}}"' in script


def test_each_role_allows_every_call_the_deploy_makes_on_its_own_environment_only(policies, fakes):  # noqa: F811
    _, roles = policies
    # what the fakes recorded of `aws` is what the_calls lists
    assert fakes["run"]("stg").returncode == 0
    recorded = {f"{c[1]}:{c[2]}" for c in fakes["calls"]() if c[0] == "aws"}
    assert recorded == {"sts:get-caller-identity", "ecr:get-login-password", "ecr:describe-images"}
    for env, other in (("stg", "prod"), ("prod", "stg")):
        _, policy = roles[env]
        for action, resource, context in the_calls(env):
            assert allows(policy, action, resource, context), f"{env}: {action} on {resource}"
        # scoped: the same calls on the other environment's resources are refused, but for
        # what prod reads of staging's by design (its images to copy, its models to serve)
        for action, resource, context in the_calls(other):
            reads_staging = other == "stg" and action in (
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
                "ecr:DescribeImages",
                "ecr:BatchCheckLayerAvailability",
                "s3:GetObject",
            )
            if f"-{other}" in resource and not reads_staging:
                assert not allows(policy, action, resource, context), f"{env} may {action} on {resource}"


def test_every_kind_of_resource_infra_manages_is_within_the_deploy_roles_services(policies):
    _, roles = policies
    _, policy = roles["stg"]
    granted = {
        a.split(":")[0]
        for s in policy["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    service_of = {
        "kinesis": "kinesis",
        "lambda": "lambda",
        "iam": "iam",
        "sqs": "sqs",
        "dynamodb": "dynamodb",
        "s3": "s3",
        "ecr": "ecr",
        "sns": "sns",
        "kms": "kms",
        "cloudwatch": "cloudwatch",
        "codedeploy": "codedeploy",
        "secretsmanager": "secretsmanager",
        "sagemaker": "sagemaker",
        "rds": "rds",
        "db": "rds",
        "glue": "glue",
        "vpc": "ec2",
        "subnet": "ec2",
        "route": "ec2",
        "internet": "ec2",
        "nat": "ec2",
        "eip": "ec2",
        "security": "ec2",
        "default": "ec2",
        "kinesis_firehose": "firehose",
    }
    types = set()
    for directory in [INFRA, *sorted((INFRA / "modules").iterdir())]:
        types |= set(blocks_of(directory, "resource"))
    for kind in sorted(types):
        name = kind.removeprefix("aws_")
        if name.startswith("cloudwatch_event"):
            service = "events"
        elif name.startswith("cloudwatch_log"):
            service = "logs"
        else:
            service = next(
                (s for p, s in sorted(service_of.items(), key=lambda x: -len(x[0])) if name.startswith(p)), None
            )
        assert service in granted, f"{kind}: the deploy role grants nothing of {service}"
