"""Dead letters: records that can never succeed, kept with their reason and origin.

Message body (contract): {"error": reason, "data": original base64, "source": {...}}.
Without a queue URL the dead letter is written to the log in full instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from rides.stream.retry import Backoff, error_code, is_retryable

# SQS takes up to 256 KiB per message and per SendMessageBatch call; stay under it.
MAX_MESSAGE_BYTES = 250 * 1024
MAX_BATCH_ENTRIES = 10


@dataclass(frozen=True)
class DeadLetter:
    error: str
    data: str  # the record's data exactly as received (base64)
    source: dict

    def body(self) -> bytes:
        message = {"error": self.error, "data": self.data, "source": self.source}
        encoded = orjson.dumps(message)
        if len(encoded) <= MAX_MESSAGE_BYTES:
            return encoded
        # Too big for SQS: keep a fingerprint; `source` still locates the full record on the
        # stream for its retention period.
        raw = self.data.encode()
        message["data"] = raw[:1024].decode("ascii", "replace")
        message["data_truncated"] = True
        message["data_size"] = len(raw)
        message["data_sha256"] = hashlib.sha256(raw).hexdigest()
        return orjson.dumps(message)


def _batches(bodies: Sequence[bytes]) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, body in enumerate(bodies):
        if current and (len(current) == MAX_BATCH_ENTRIES or size + len(body) > MAX_MESSAGE_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += len(body)
    if current:
        batches.append(current)
    return batches


class QueueSender:
    """SendMessageBatch with retry of the failed entries; returns the indices not delivered."""

    def __init__(
        self,
        client,
        queue_url: str,
        *,
        logger: logging.Logger | None = None,
        backoff: Callable[..., Backoff] = Backoff,
        what: str = "queue",
    ):
        self.client = client
        self.queue_url = queue_url
        self.logger = logger or logging.getLogger("rides.stream.deadletter")
        self.backoff = backoff
        self.what = what

    def send(self, bodies: Sequence[bytes], time_left: Callable[[], float] | None = None) -> list[int]:
        pending = list(range(len(bodies)))
        backoff = self.backoff(time_left=time_left)
        while pending:
            failed: list[int] = []
            fatal = False
            for batch in _batches([bodies[i] for i in pending]):
                indices = [pending[j] for j in batch]
                if time_left is not None and time_left() <= 0:
                    # No call may start that could outlast the invocation: report the rest.
                    failed.extend(indices)
                    fatal = True
                    continue
                try:
                    response = self.client.send_message_batch(
                        QueueUrl=self.queue_url,
                        Entries=[{"Id": str(n), "MessageBody": bodies[i].decode()} for n, i in enumerate(indices)],
                    )
                except Exception as exc:
                    self.logger.warning("%s send failed: %s", self.what, error_code(exc))
                    failed.extend(indices)
                    fatal = fatal or not is_retryable(exc)
                    continue
                for entry in response.get("Failed", []):
                    failed.append(indices[int(entry["Id"])])
                    fatal = fatal or entry.get("SenderFault", False)
            pending = sorted(failed)
            if pending and (fatal or not backoff.wait()):
                break
        return pending


class DeadLetterSink:
    """Sends dead letters to SQS; returns the indices that could not be delivered."""

    def __init__(
        self,
        client,
        queue_url: str | None,
        *,
        logger: logging.Logger | None = None,
        backoff: Callable[..., Backoff] = Backoff,
    ):
        self.client = client
        self.queue_url = queue_url
        self.logger = logger or logging.getLogger("rides.stream.deadletter")
        self.backoff = backoff

    def send(self, letters: Sequence[DeadLetter], time_left: Callable[[], float] | None = None) -> list[int]:
        if not letters:
            return []
        if not self.queue_url:
            for letter in letters:
                self.logger.error(
                    "dead letter (no DEAD_LETTER_QUEUE_URL set)", extra={"dead_letter": orjson.loads(letter.body())}
                )
            return []
        sender = QueueSender(
            self.client, self.queue_url, logger=self.logger, backoff=self.backoff, what="dead-letter queue"
        )
        return sender.send([letter.body() for letter in letters], time_left)
