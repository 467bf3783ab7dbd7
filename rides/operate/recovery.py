"""Recovery: what lands in the two queues an operator must empty, and how it goes back.

- The dead-letter queue holds records that can never succeed as they are (bad data, a value
  no model or table takes), each with its reason and origin. `rides dead-letters` lists them
  with counts by reason; after a fix, `rides redrive --dead-letters` puts the original data
  back on the stream it was read from.
- The failed-batches queue holds the event source mapping's pointers to batches it gave up
  on (retries or record age exhausted): a shard and a range of sequence numbers, not the
  records. `rides redrive` reads that range from the stream while the stream still holds it
  and sends it through the function again (the local handler, or the Lambda itself), then
  deletes the pointer; a range the stream no longer holds is reported, never dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from rides import RidesError
from rides.stream.lambda_event import kinesis_event_record

# Lambda's synchronous invoke takes a 6 MB request: leave room for the event's own fields.
MAX_INVOKE_BYTES = 5 * 1024 * 1024
MAX_INVOKE_RECORDS = 500


@dataclass
class QueueMessage:
    body: dict
    receipt_handle: str


def peek(sqs, queue_url: str, *, visibility_s: int = 30, limit: int | None = None) -> list[QueueMessage]:
    """Every message waiting in a queue, left in it (each is invisible for `visibility_s`
    seconds, then back): what the listing and the redrive work on."""
    seen: dict[str, QueueMessage] = {}
    while limit is None or len(seen) < limit:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility_s, WaitTimeSeconds=0
        ).get("Messages", [])
        new = [message for message in messages if message["MessageId"] not in seen]
        if not new:  # empty, or only what we already hold came back
            break
        for message in new:
            seen[message["MessageId"]] = QueueMessage(json.loads(message["Body"]), message["ReceiptHandle"])
    return list(seen.values())[:limit]


def delete(sqs, queue_url: str, message: QueueMessage) -> None:
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message.receipt_handle)


def make_visible(sqs, queue_url: str, messages: list[QueueMessage]) -> None:
    """Make messages that were only looked at visible again at once."""
    for start in range(0, len(messages), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                for i, m in enumerate(messages[start : start + 10])
            ],
        )


# -- dead letters ---------------------------------------------------------------------------------
def reason_counts(letters: list[QueueMessage]) -> Counter:
    """Counts by reason, with the varying part of a reason (a value, a position) cut off."""
    return Counter(_reason_kind(m.body.get("error", "?")) for m in letters)


def _reason_kind(reason: str) -> str:
    kind = reason.split(": ", 1)[0]
    return kind if len(kind) < len(reason) or len(reason) <= 80 else reason[:80]


def decoded_data(body: dict) -> bytes:
    try:
        return base64.b64decode(body.get("data") or "", validate=True)
    except ValueError:
        return (body.get("data") or "").encode()


def redrive_dead_letters(
    sqs,
    kinesis,
    queue_url: str,
    *,
    streams: dict[str, str],
    matching: str | None = None,
    limit: int | None = None,
) -> dict:
    """Put dead letters (those whose reason contains `matching`) back on the stream they came
    from, then delete them. `streams` maps a kind ("events", "predictions") to its stream
    name, for letters written before dead letters named their stream."""
    result = Counter()
    kept: list[QueueMessage] = []
    for message in peek(sqs, queue_url, limit=limit):
        body = message.body
        if matching and matching not in body.get("error", ""):
            result["kept (reason does not match)"] += 1
            kept.append(message)
            continue
        if body.get("data_truncated"):
            result["kept (data truncated: replay it with its source)"] += 1
            kept.append(message)
            continue
        data = decoded_data(body)
        stream = _stream_of(body, data, streams)
        kinesis.put_record(StreamName=stream, PartitionKey=_partition_key(data), Data=data)
        delete(sqs, queue_url, message)
        result[f"sent to {stream}"] += 1
    make_visible(sqs, queue_url, kept)
    return dict(result)


def _stream_of(body: dict, data: bytes, streams: dict[str, str]) -> str:
    arn = (body.get("source") or {}).get("stream_arn")
    if arn:
        return arn.rsplit("/", 1)[-1]
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    looks_like_prediction = isinstance(parsed, dict) and "prediction" in parsed and "model" in parsed
    return streams["predictions"] if looks_like_prediction else streams["events"]


def _partition_key(data: bytes) -> str:
    """The ride id, as producers key it (per-ride order); a hash when there is none."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        ride = parsed.get("ride_id", (parsed.get("prediction") or {}).get("ride_id"))
        if isinstance(ride, str | int) and not isinstance(ride, bool) and str(ride):
            return str(ride)[:256]
    return hashlib.sha256(data).hexdigest()


# -- failed batches -------------------------------------------------------------------------------
@dataclass
class BatchPointer:
    """A failed-batch message: which function gave up on which range of which shard."""

    function_arn: str
    stream_arn: str
    shard_id: str
    start: str
    end: str
    size: int
    condition: str

    @property
    def function_name(self) -> str:
        # arn:aws:lambda:<region>:<account>:function:<name>[:<alias or version>]: the mapping
        # calls the `live` alias, so the ARN usually ends in a qualifier.
        parts = self.function_arn.split(":")
        return parts[6] if len(parts) > 6 else parts[-1]

    @property
    def stream_name(self) -> str:
        return self.stream_arn.rsplit("/", 1)[-1]

    @classmethod
    def from_message(cls, body: dict) -> BatchPointer:
        info, context = body["KinesisBatchInfo"], body.get("requestContext", {})
        return cls(
            function_arn=context.get("functionArn", ""),
            stream_arn=info["streamArn"],
            shard_id=info["shardId"],
            start=info["startSequenceNumber"],
            end=info["endSequenceNumber"],
            size=int(info.get("batchSize", 0)),
            condition=context.get("condition", ""),
        )


class RangeExpired(RidesError):
    """The stream no longer holds the start of the range (past its retention)."""


def read_range(kinesis, pointer: BatchPointer) -> list[dict]:
    """The records a pointer names, read from the stream (GetRecords shape)."""
    iterator = kinesis.get_shard_iterator(
        StreamName=pointer.stream_name,
        ShardId=pointer.shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=pointer.start,
    )["ShardIterator"]
    records: list[dict] = []
    end = int(pointer.end)
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        batch = response["Records"]
        if not records and (not batch or batch[0]["SequenceNumber"] != pointer.start):
            raise RangeExpired(f"{pointer.shard_id} no longer holds {pointer.start} (past the stream's retention?)")
        for record in batch:
            if int(record["SequenceNumber"]) > end:
                return records
            records.append(record)
        if not batch or int(batch[-1]["SequenceNumber"]) >= end:
            break
        iterator = response.get("NextShardIterator")
    return records


def events_for(records: list[dict], pointer: BatchPointer, region: str) -> Iterator[dict]:
    """Lambda Kinesis events of at most 500 records and 5 MB each, in order."""
    chunk: list[dict] = []
    size = 0
    for record in records:
        event_record = kinesis_event_record(record, pointer.shard_id, pointer.stream_arn, region)
        record_size = len(event_record["kinesis"]["data"]) + 512
        if chunk and (len(chunk) == MAX_INVOKE_RECORDS or size + record_size > MAX_INVOKE_BYTES):
            yield {"Records": chunk}
            chunk, size = [], 0
        chunk.append(event_record)
        size += record_size
    if chunk:
        yield {"Records": chunk}


@dataclass
class RedriveResult:
    redriven: int = 0  # pointers whose every record went through
    records: int = 0
    kept: list[str] = field(default_factory=list)  # why a pointer stays in the queue

    def as_dict(self) -> dict:
        return {"redriven": self.redriven, "records": self.records, "kept": self.kept}


def redrive_failed_batches(
    sqs,
    kinesis,
    queue_url: str,
    invoke: Callable[[BatchPointer, dict], dict],
    *,
    region: str,
    limit: int | None = None,
) -> RedriveResult:
    """Send each failed batch through its function again, in order, and delete the pointer
    once every record is done; a batch whose records are reported again stays queued."""
    result = RedriveResult()
    kept: list[QueueMessage] = []
    for message in peek(sqs, queue_url, visibility_s=300, limit=limit):
        pointer = BatchPointer.from_message(message.body)
        try:
            records = read_range(kinesis, pointer)
        except RangeExpired as exc:
            result.kept.append(str(exc))
            kept.append(message)
            continue
        for event in events_for(records, pointer, region):
            response = invoke(pointer, event) or {}
            failures = response.get("batchItemFailures") or []
            if failures:
                result.kept.append(f"{pointer.function_name} {pointer.shard_id}: {len(failures)} records failed again")
                kept.append(message)
                break
            result.records += len(event["Records"])
        else:
            delete(sqs, queue_url, message)
            result.redriven += 1
    make_visible(sqs, queue_url, kept)
    return result


def lambda_invoker(lambda_client) -> Callable[[BatchPointer, dict], dict]:
    """Invoke the function that gave up, synchronously, with the same kind of event."""

    def invoke(pointer: BatchPointer, event: dict) -> dict:
        response = lambda_client.invoke(
            FunctionName=pointer.function_arn, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            # Every record again: the pointer stays.
            return {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]} for r in event["Records"]]}
        return payload if isinstance(payload, dict) else {}

    return invoke
