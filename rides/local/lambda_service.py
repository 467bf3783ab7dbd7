"""What Lambda's service hands a function and its destinations, as the local runner plays it: the
context object a handler may ask for its time left, and the message an on-failure destination
gets for a Kinesis batch the event source mapping gave up on."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime


class LambdaContext:
    """What the handler may ask of Lambda's context object."""

    def __init__(self, function_name: str, timeout_s: float, region: str):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local-runner"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def on_failure_message(
    records: list[dict],
    shard_id: str,
    stream_arn: str,
    condition: str,
    invoke_count: int,
    function_name: str,
    region: str,
) -> dict:
    """The record Lambda sends to an on-failure destination for a Kinesis batch."""

    def iso(value) -> str:
        moment = value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:{region}:000000000000:function:{function_name}",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": records[0]["SequenceNumber"],
            "endSequenceNumber": records[-1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": iso(records[0]["ApproximateArrivalTimestamp"]),
            "approximateArrivalOfLastRecord": iso(records[-1]["ApproximateArrivalTimestamp"]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }
