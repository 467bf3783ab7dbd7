"""Exponential backoff with full jitter, bounded by attempts and by the time left.

Shared by the Kinesis publisher and the dead-letter sink, so both give up the same way:
before the Lambda's deadline, leaving the records to the partial batch response.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

# Errors worth retrying in the same invocation: throttling and transient service faults.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",  # DynamoDB: the account's throughput limit
        "Throttling",
        "RequestThrottled",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection trouble may pass; a missing stream or denied access won't
    pass within this invocation (the record is then reported for a later retry)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in RETRYABLE_CODES or status >= 500
    return isinstance(exc, BotoCoreError)


@dataclass
class Backoff:
    base: float = 0.05
    cap: float = 2.0
    max_attempts: int = 8
    # Seconds left before we must stop (Lambda: remaining time minus a reserve); None: no limit.
    time_left: Callable[[], float] | None = None
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
    attempts: int = field(default=0, init=False)

    def wait(self) -> bool:
        """Sleep before the next attempt; False when out of attempts or time."""
        self.attempts += 1
        if self.attempts >= self.max_attempts:
            return False
        delay = self.rng() * min(self.cap, self.base * (2 ** (self.attempts - 1)))
        if self.time_left is not None and delay >= self.time_left():
            return False
        self.sleep(delay)
        return True
