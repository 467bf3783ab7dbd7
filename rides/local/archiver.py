"""`rides archive`: what Kinesis Data Firehose does on AWS (infra/modules/stream_archive), for
the local stack: read the predictions, decisions and completions streams from where the last
run stopped and write them to the bucket as parquet by arrival hour (rides.operate.archive)."""

from __future__ import annotations

import json
from pathlib import Path

from rides.operate.archive import write_archive


def archive_streams(kinesis, s3, bucket: str, streams: dict[str, str], state: Path) -> dict[str, int]:
    """`streams`: stream name → kind (predictions, decisions, completions). → records archived
    per stream. Checkpoints (per shard) are saved only after the stream's parts are written, so a
    crash re-archives a few records rather than losing any."""
    archived = {}
    for stream, kind in streams.items():
        path = state / f"{stream}.json"
        positions: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        records = []
        for page in kinesis.get_paginator("list_shards").paginate(StreamName=stream):
            for shard in page["Shards"]:
                shard_id = shard["ShardId"]
                after = positions.get(shard_id)
                iterator = kinesis.get_shard_iterator(
                    StreamName=stream,
                    ShardId=shard_id,
                    **(
                        {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
                        if after
                        else {"ShardIteratorType": "TRIM_HORIZON"}
                    ),
                )["ShardIterator"]
                while iterator:
                    response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                    records += response["Records"]
                    if response["Records"]:
                        positions[shard_id] = response["Records"][-1]["SequenceNumber"]
                    if not response["Records"] or not response.get("MillisBehindLatest"):
                        break
                    iterator = response.get("NextShardIterator")
        if records:
            write_archive(s3, bucket, stream, kind, records)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(positions))
        archived[stream] = len(records)
    return archived
