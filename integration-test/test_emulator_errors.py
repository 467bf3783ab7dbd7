"""Errors the emulator words as AWS words them, where a client decides by the words.

The Terraform AWS provider treats a DeleteTable answered "Requested resource not found: Table: "
as a table already gone (internal/service/dynamodb/table.go, resourceTableDelete). moto says only
"Requested resource not found", so a DeleteTable the SDK sent twice (the first one done, its
answer lost) failed a destroy on the emulator that AWS would have finished (CI, 2026-12-02:
`terraform destroy` of staging, "deleting AWS DynamoDB Table (ride-decisions-stg) ...
ResourceNotFoundException: Requested resource not found").
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rides.local.chaos import set_faults
from tests.helpers import terraform_check

pytestmark = pytest.mark.integration

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def dynamodb(on_emulator):
    return boto3.client("dynamodb", config=NO_RETRIES)


def new_table(dynamodb) -> str:
    name = f"errors-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "ride_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "ride_id", "AttributeType": "S"}],
    )
    return name


def test_deleting_a_table_that_is_gone_names_the_table_as_aws_does(dynamodb):
    name = new_table(dynamodb)
    dynamodb.delete_table(TableName=name)
    with pytest.raises(ClientError) as gone:
        dynamodb.delete_table(TableName=name)
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert gone.value.response["Error"]["Message"] == f"Requested resource not found: Table: {name} not found"
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_table_that_exists_is_still_deleted_by_moto(dynamodb):
    name = new_table(dynamodb)
    dynamodb.delete_table(TableName=name)
    assert name not in dynamodb.list_tables()["TableNames"]


def test_a_destroy_whose_deletetable_answer_is_lost_still_finishes(emulator, tmp_path):
    """The CI failure, replayed with Terraform's own provider: the first DeleteTable is carried
    out and its answer lost (a 500), the SDK sends it again, and the destroy must finish with
    nothing left, as it does on AWS."""
    terraform, why = terraform_check.find()
    if terraform is None:
        pytest.skip(f"terraform apply: {why}")
    workspace = terraform_check.Workspace(terraform, emulator.endpoint, tmp_path)
    suffix = uuid.uuid4().hex[:8]
    args = [
        *terraform_check.arguments(
            ["vars/stg.tfvars"],
            {
                "environment": f"lost{suffix[:6]}",
                "aws_region": "us-east-1",
                "models": json.dumps({"ride-duration": {"uri": "s3://m/mlflow/1/d", "version": "1"}}),
            },
        ),
        "-target=module.decisions_table",
    ]
    workspace.apply(args)
    assert [r["type"] for r in workspace.managed_resources()] == ["aws_dynamodb_table"]
    try:
        set_faults(emulator.endpoint, {"lose_answers": {"DynamoDB_20120810.DeleteTable": 1}})
        workspace.destroy(args)
        hits = set_faults(emulator.endpoint, {})["hits"]
    finally:
        set_faults(emulator.endpoint, {})
    assert hits == {"lost_answer:DynamoDB_20120810.DeleteTable": 1}
    assert workspace.managed_resources() == []
