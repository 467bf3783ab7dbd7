"""The two-account layout: staging exports the deployed versions' artifacts, prod imports them
into its own bucket (moto S3, the real loader and CLI)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from rides.cli import main
from rides.stream.model import load_model
from tests.helpers import upload_dir


def test_prod_serves_the_versions_staging_recorded_from_its_own_bucket(aws, onnx_model_dir, tmp_path):
    key = "mlflow/1/models/m-abc/artifacts"
    staging_uri = upload_dir(aws["s3"], onnx_model_dir, "rides-models-stg", key)
    record = tmp_path / "deploy-record-stg.json"
    record.write_text(
        json.dumps(
            {
                "environment": "stg",
                "image_tag": "abc123",
                "smoke_test": "passed",
                "models": {"ride-duration": {"uri": staging_uri, "version": "3"}},
            }
        )
    )
    exported = CliRunner().invoke(main, ["models", "export", "--record", str(record), "--to", str(tmp_path / "carry")])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output) == {"ride-duration": "3"}

    aws["s3"].create_bucket(Bucket="rides-models-prod")
    aws["s3"].delete_object(Bucket="rides-models-stg", Key=f"{key}/MLmodel")  # prod never reads staging's bucket
    out = tmp_path / "deploy-record-prod.json"
    imported = CliRunner().invoke(
        main,
        [
            "models",
            "import",
            "--from",
            str(tmp_path / "carry"),
            "--bucket",
            "rides-models-prod",
            "--record-out",
            str(out),
        ],
    )
    assert imported.exit_code == 0, imported.output
    rewritten = json.loads(out.read_text())
    assert rewritten["models"]["ride-duration"] == {"uri": f"s3://rides-models-prod/{key}", "version": "3"}
    assert (rewritten["environment"], rewritten["image_tag"], rewritten["smoke_test"]) == ("stg", "abc123", "passed")
    assert load_model(rewritten["models"]["ride-duration"]["uri"]).flavor == "onnx"


def test_an_import_that_does_not_load_writes_no_record(aws, tmp_path):
    carry = tmp_path / "carry"
    (carry / "ride-duration").mkdir(parents=True)
    (carry / "ride-duration" / "MLmodel").write_text("flavors: {}\n")
    (carry / "record.json").write_text(
        json.dumps({"models": {"ride-duration": {"uri": "s3://x/k", "version": "3", "key": "mlflow/k"}}})
    )
    aws["s3"].create_bucket(Bucket="rides-models-prod")
    out = tmp_path / "record.json"
    result = CliRunner().invoke(
        main, ["models", "import", "--from", str(carry), "--bucket", "rides-models-prod", "--record-out", str(out)]
    )
    assert result.exit_code != 0 and "artifacts are missing or unusable" in result.output
    assert not out.exists()
