"""A dead letter too big for SQS (a Kinesis record takes up to 1 MiB, an SQS message 256 KiB)
keeps its reason, its origin and a fingerprint of its data (docs/contracts.md), and still goes
to the queue."""

from __future__ import annotations

import base64
import hashlib
import logging

import orjson
import pytest
from botocore.exceptions import ClientError

from rides.stream.deadletter import MAX_MESSAGE_BYTES, DeadLetter, DeadLetterSink, QueueSender, _batches
from rides.stream.retry import Backoff

SOURCE = {"stream": "ride-events", "shard_id": "shardId-000000000000", "sequence_number": "49"}


def letter_of_size(size: int) -> DeadLetter:
    """A dead letter whose whole body is `size` bytes."""
    overhead = len(DeadLetter("bad JSON", "", SOURCE).body())
    return DeadLetter("bad JSON", "A" * (size - overhead), SOURCE)


def test_a_dead_letter_up_to_the_limit_is_kept_whole():
    letter = letter_of_size(MAX_MESSAGE_BYTES)
    body = letter.body()
    assert len(body) == MAX_MESSAGE_BYTES
    assert orjson.loads(body) == {"error": "bad JSON", "data": letter.data, "source": SOURCE}


def test_one_byte_over_keeps_the_first_kilobyte_the_size_and_the_digest_of_the_data():
    letter = letter_of_size(MAX_MESSAGE_BYTES + 1)
    message = orjson.loads(letter.body())
    raw = letter.data.encode()
    assert message == {
        "error": "bad JSON",
        "data": letter.data[:1024],
        "source": SOURCE,
        "data_truncated": True,
        "data_size": len(raw),
        "data_sha256": hashlib.sha256(raw).hexdigest(),
    }


def test_a_one_mebibyte_record_as_lambda_hands_it_over_fits_a_message():
    record = base64.b64encode(bytes(range(256)) * 4096).decode()  # 1 MiB of data, 1.4 MB as base64
    body = DeadLetter("bad UTF-8", record, SOURCE).body()
    assert len(body) < 2_000
    message = orjson.loads(body)
    assert message["data"] == record[:1024] and message["data_size"] == len(record)
    assert message["data_sha256"] == hashlib.sha256(record.encode()).hexdigest()


def test_data_that_is_not_ascii_is_shown_replaced_and_fingerprinted_as_received():
    data = "é" + "x" * MAX_MESSAGE_BYTES  # not base64: a record whose data Lambda could not encode
    message = orjson.loads(DeadLetter("bad base64", data, SOURCE).body())
    assert message["data"] == "\ufffd\ufffd" + "x" * 1022  # the two bytes of "é"
    assert message["data_size"] == len(data.encode())
    assert message["data_sha256"] == hashlib.sha256(data.encode()).hexdigest()


@pytest.fixture
def queue(aws):
    return aws["sqs"], aws["sqs"].create_queue(QueueName="dead")["QueueUrl"]


def test_letters_over_the_limit_go_to_the_queue_beside_small_ones(queue):
    sqs, url = queue
    letters = [letter_of_size(MAX_MESSAGE_BYTES + 5), DeadLetter("bad JSON", "e30=", SOURCE), letter_of_size(300_000)]
    assert QueueSender(sqs, url).send([letter.body() for letter in letters]) == []
    got = []
    for _ in range(10):
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        got += [orjson.loads(m["Body"]) for m in received]
        if len(got) == 3:
            break
    truncated = sorted(m["data_size"] for m in got if m.get("data_truncated"))
    assert truncated == sorted([len(letters[0].data), len(letters[2].data)])
    assert [m["data"] for m in got if not m.get("data_truncated")] == ["e30="]


# -- the sink a function's dead letters go through -----------------------------------------------
def test_without_a_queue_each_dead_letter_is_logged_in_full_as_an_error(caplog):

    logger = logging.getLogger("rides.test.deadletter")
    letters = [DeadLetter("bad JSON", "e30=", SOURCE), letter_of_size(MAX_MESSAGE_BYTES + 1)]
    with caplog.at_level(logging.ERROR, logger="rides.test.deadletter"):
        assert DeadLetterSink(None, None, logger=logger).send(letters) == []
    logged = [r for r in caplog.records if r.name == "rides.test.deadletter"]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (logging.ERROR, "dead letter (no DEAD_LETTER_QUEUE_URL set)")
    ] * 2
    assert [r.dead_letter for r in logged] == [orjson.loads(letter.body()) for letter in letters]


class RaisingOn:
    """SendMessageBatch raising `code` on the calls `on` names, taking the others."""

    ALWAYS = range(1, 1000)

    def __init__(self, code, status, on):
        self.code, self.status, self.on, self.calls = code, status, on, []

    def send_message_batch(self, QueueUrl, Entries):
        self.calls.append(len(Entries))
        if len(self.calls) in self.on:
            error = {"Error": {"Code": self.code}, "ResponseMetadata": {"HTTPStatusCode": self.status}}
            raise ClientError(error, "SendMessageBatch")
        return {}


def test_a_queue_that_refuses_is_tried_as_the_sinks_backoff_allows_and_logged_on_its_logger(caplog):
    made = []

    def backoff(**kwargs):
        made.append(kwargs)
        return Backoff(max_attempts=3, sleep=lambda s: None, **kwargs)

    client, logger, time_left = (
        RaisingOn("ThrottlingException", 400, on=RaisingOn.ALWAYS),
        logging.getLogger("rides.test.deadletter"),
        lambda: 30.0,
    )
    with caplog.at_level(logging.WARNING, logger="rides.test.deadletter"):
        undelivered = DeadLetterSink(client, "http://q", logger=logger, backoff=backoff).send(
            [DeadLetter("bad JSON", "e30=", SOURCE)] * 2, time_left
        )
    assert undelivered == [0, 1] and len(client.calls) == 3 and made == [{"time_left": time_left}]
    assert [r.getMessage() for r in caplog.records if r.name == "rides.test.deadletter"] == [
        "dead-letter queue send failed: ThrottlingException"
    ] * 3


# -- SendMessageBatch: at most 10 messages and 256 KiB a call, failed entries sent again --------
@pytest.mark.parametrize(
    "sizes, expected",
    [
        ([10] * 25, [10, 10, 5]),  # ten messages a call
        ([100_000] * 5, [2, 2, 1]),  # a third 100 kB message would pass 250 KiB
        ([MAX_MESSAGE_BYTES // 2, MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES // 2], [2]),  # exactly the limit: one call
        ([MAX_MESSAGE_BYTES // 2, MAX_MESSAGE_BYTES - MAX_MESSAGE_BYTES // 2 + 1], [1, 1]),  # a byte more: two
        ([1] * 10 + [MAX_MESSAGE_BYTES - 7, 7], [10, 2]),  # a new call's size starts from nothing
        ([MAX_MESSAGE_BYTES] * 3, [1, 1, 1]),
    ],
)
def test_messages_are_sent_in_calls_sqs_takes(sizes, expected):
    batches = _batches([b"x" * n for n in sizes])
    assert [len(b) for b in batches] == expected
    assert [i for b in batches for i in b] == list(range(len(sizes)))


class FailingFirst:
    """SendMessageBatch failing the entries `fail` names on the first call (a retryable fault)."""

    def __init__(self, fail):
        self.fail, self.calls = set(fail), []

    def send_message_batch(self, QueueUrl, Entries):
        self.calls.append([e["MessageBody"] for e in Entries])
        failed = [e["Id"] for i, e in enumerate(Entries) if len(self.calls) == 1 and i in self.fail]
        return {"Failed": [{"Id": n, "SenderFault": False, "Code": "InternalError"} for n in failed]}


def test_only_the_failed_entries_are_sent_again():
    client = FailingFirst(fail={1, 3})
    sender = QueueSender(client, "http://q", backoff=lambda **kw: Backoff(sleep=lambda s: None, **kw))
    assert sender.send([f"m{i}".encode() for i in range(5)]) == []
    assert client.calls == [["m0", "m1", "m2", "m3", "m4"], ["m1", "m3"]]


def test_a_moment_left_is_time_to_send_and_none_left_is_not():
    client = FailingFirst(fail=set())
    assert QueueSender(client, "http://q").send([b"m"], lambda: 0.5) == [] and client.calls == [["m"]]
    assert QueueSender(client, "http://q").send([b"m", b"n"], lambda: 0.0) == [0, 1] and len(client.calls) == 1


def test_no_wait_is_started_that_the_time_left_cannot_hold():
    client = RaisingOn("ThrottlingException", 400, on=RaisingOn.ALWAYS)
    slept = []
    sender = QueueSender(client, "http://q", backoff=lambda **kw: Backoff(sleep=slept.append, base=1.0, **kw))
    assert sender.send([b"m"], lambda: 0.001) == [0]
    assert len(client.calls) == 1 and slept == []  # the first wait would outlast the invocation


def test_a_refusal_no_retry_can_cure_is_not_tried_again():
    client = RaisingOn("AWS.SimpleQueueService.NonExistentQueue", 400, on={1, 2, 3})
    sender = QueueSender(client, "http://q", backoff=lambda **kw: Backoff(sleep=lambda s: None, **kw))
    assert sender.send([b"m"] * 3) == [0, 1, 2] and client.calls == [3]


def test_a_failed_call_does_not_hold_back_the_calls_after_it():
    client = RaisingOn("InternalError", 500, on={1})
    sender = QueueSender(client, "http://q", backoff=lambda **kw: Backoff(sleep=lambda s: None, **kw))
    assert sender.send([b"m"] * 15) == []
    assert client.calls == [10, 5, 10]  # the second call went out before the first was tried again
