"""What every stream function's Lambda entry point shares: its AWS clients, its deadline, its
dead-letter sink, and how the local runner runs it from an environment of its own.

The anchors' way (the course's `init()` factory, Powertools' one processor): a handler in
lambda_function/ is one `StreamFunction` over a `run(invocation)` that builds its service from
the invocation's environment and clients and calls its `process_*` function.

- Clients are made once per function and kept for the container's life. A Lambda container
  runs one function; the local runner runs several in one process, so they are kept per
  function. Each names its function in the User-Agent (`rides-function/<name>`): CloudTrail,
  and the local stack's request meter (rides.local.meter), count a call against the function
  that made it.
- The deadline: the invocation's remaining time minus a reserve for the longest single call
  (rides.stream.aws), so that no call outlives the invocation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from rides.stream.aws import LAMBDA_CLIENT_CONFIG, RESERVE_SECONDS, lean_clients
from rides.stream.deadletter import DeadLetterSink

AGENT_TAG = "rides-function/"


def client_config(function: str) -> Config:
    return LAMBDA_CLIENT_CONFIG.merge(Config(user_agent_extra=f"{AGENT_TAG}{function}"))


def function_name(context, env: Mapping[str, str] = os.environ) -> str:
    return (
        getattr(context, "function_name", None)
        or env.get("AWS_LAMBDA_FUNCTION_NAME")
        or env.get("POWERTOOLS_SERVICE_NAME")
        or "rides"
    )


class Clients:
    """A function's clients for `services`, made on first use, from one session whose parsed
    data files are then freed (rides.stream.aws)."""

    def __init__(self, services: Iterable[str]):
        self.services = tuple(services)
        self._made: dict[str, dict[str, object]] = {}

    def of(self, function: str) -> dict[str, object]:
        made = self._made.get(function)
        if made is None:
            made = self._made[function] = lean_clients(self.services, client_config(function))
        return made

    def clear(self) -> None:
        self._made.clear()

    def __bool__(self) -> bool:
        return bool(self._made)


def deadline(context) -> Callable[[], float]:
    """Seconds the invocation may still spend on calls (its remaining time minus the reserve)."""
    return lambda: context.get_remaining_time_in_millis() / 1000.0 - RESERVE_SECONDS


def handler_for(handle: Callable, env: Mapping[str, str]) -> Callable:
    """A handler reading its configuration from `env` instead of the process environment: the
    local runner serves several functions in one process this way."""

    def handler(event, context):
        return handle(event, context, env)

    return handler


@dataclass(frozen=True)
class Invocation:
    """One call of a stream function: its event, its configuration's environment, its clients
    and its deadline."""

    event: Any
    env: Mapping[str, str]
    aws: Mapping[str, Any]
    time_left: Callable[[], float]
    logger: Any

    @property
    def scheduled(self) -> bool:
        """Invoked by a schedule (no Kinesis records): a sweep, not a batch."""
        return "Records" not in (self.event or {})

    @property
    def records(self) -> list:
        return (self.event or {}).get("Records") or []

    def dead_letters(self, queue_url: str | None) -> DeadLetterSink:
        """The function's dead-letter sink; without a queue, dead letters go to the log in full."""
        return DeadLetterSink(self.aws["sqs"] if queue_url else None, queue_url, logger=self.logger)

    def batch_io(self, queue_url: str | None) -> dict[str, Any]:
        """What every service's `process_*` takes from the invocation besides its records and
        its own parts: the dead-letter sink, the deadline and the logger."""
        return {"dead_letters": self.dead_letters(queue_url), "time_left": self.time_left, "logger": self.logger}


class StreamFunction:
    """A stream function's Lambda entry point: `lambda_handler` (the process environment) and
    `handler_for(env)` (the local runner's), both calling `run(Invocation)` with the function's
    clients for `services`, made once per function."""

    def __init__(self, services: Iterable[str], run: Callable[[Invocation], Any], *, logger: Any):
        self.clients = Clients(services)
        self.run = run
        self.logger = logger

    def handle(self, event, context, env: Mapping[str, str]):
        aws = self.clients.of(function_name(context, env))
        return self.run(Invocation(event, env, aws, deadline(context), self.logger))

    def lambda_handler(self, event, context):
        return self.handle(event, context, os.environ)

    def handler_for(self, env: Mapping[str, str]) -> Callable:
        return handler_for(self.handle, env)
