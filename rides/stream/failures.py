"""Why records are reported for a retry or a store gives up: the codes our own code names.

A batch's `errors` counts records by code, AWS's error codes (ProvisionedThroughputExceeded…)
and these; they are logged and emitted as they are (a `StrEnum` is its text).
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    DEADLINE_PASSED = "DeadlinePassed"  # the invocation's time ran out before the call
    RETRIES_EXHAUSTED = "RetriesExhausted"  # throttled or failing on every try
    RETRYABLE = "Retryable"  # a call that may pass on a later try (a timeout, a 5xx)
    CONFLICT = "Conflict"  # a conditional write lost to another writer
    UNPROCESSED_KEYS = "UnprocessedKeys"  # DynamoDB left keys unread on every try
    PUBLISH_FAILED = "PublishFailed"  # the record's output could not be published
    DEAD_LETTER_UNDELIVERED = "DeadLetterUndelivered"  # neither done nor delivered as a dead letter
    MODEL_LOAD_ERROR = "ModelLoadError"  # the model could not be loaded
    MODEL_FAULT = "ModelFault"  # the model loaded but cannot serve this build's features


class StoreUnavailable(RuntimeError):
    """A table could not be read or written before the deadline; `code` says why (an AWS error
    code or a `Failure`). Its records are reported for a retry."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
