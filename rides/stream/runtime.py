"""What every stream function's Lambda entry point shares: its AWS clients, its deadline, and
how the local runner runs it from an environment of its own.

The anchors' way (the course's `init()` factory, Powertools' one processor): the handlers in
lambda_function/ are short adapters over this and their service's `process_*` function.

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

from botocore.config import Config

from rides.stream.aws import LAMBDA_CLIENT_CONFIG, RESERVE_SECONDS, lean_clients

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
