"""Moving deployed models between accounts: staging exports, prod imports.

In the two-account layout each account has its own model bucket, encrypted with its own
AWS-managed key, which another account cannot be granted. So no account reads the other's
bucket: the staging deploy (with staging's credentials) exports the artifacts of exactly the
versions its deploy record names to a folder, the pipeline carries the folder, and the prod
deploy (with prod's credentials) imports them into prod's bucket under the same keys and
rewrites the record to point there. The record's versions do not change: prod still serves
what staging tested.
"""

from __future__ import annotations

import json
from pathlib import Path

from rides.models.serving import check_artifacts


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key.rstrip("/")


def export_models(record_path: Path, folder: Path, s3) -> dict:
    """Download every model the deploy record names into `folder/<model>/`; write
    `folder/record.json` (the record, with each model's original key kept as `key`)."""
    record = json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for model, entry in record["models"].items():
        bucket, prefix = _split(entry["uri"])
        files = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for obj in page.get("Contents", []):
                target = folder / model / obj["Key"][len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                files += 1
        if not files:
            raise FileNotFoundError(f"{entry['uri']} holds no files")
        entry["key"] = prefix
    (folder / "record.json").write_text(json.dumps(record, indent=2))
    return record


def import_models(folder: Path, bucket: str, s3, record_out: Path) -> dict:
    """Upload the exported models into `bucket` under their original keys, check that each
    loads from there, and write the deploy record pointing at them."""
    record = json.loads((folder / "record.json").read_text())
    for model, entry in record["models"].items():
        key = entry.pop("key")
        for file in sorted((folder / model).rglob("*")):
            if file.is_file():
                s3.upload_file(str(file), bucket, f"{key}/{file.relative_to(folder / model).as_posix()}")
        entry["uri"] = f"s3://{bucket}/{key}"
        check_artifacts(entry["uri"])  # the model loads from its new home, or nothing is written
    record_out.write_text(json.dumps(record, indent=2))
    return record
