"""The event Lambda sends a function for Kinesis records, built from GetRecords' records: what
the local runner invokes the handlers with and what `rides redrive` replays through them."""

from __future__ import annotations

import base64
from datetime import datetime


def kinesis_event_record(record: dict, shard_id: str, stream_arn: str, region: str) -> dict:
    """One record of the event Lambda sends for Kinesis."""
    arrival = record["ApproximateArrivalTimestamp"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode("ascii"),
            "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::000000000000:role/{stream_arn.rsplit('/', 1)[-1]}-consumer",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }
