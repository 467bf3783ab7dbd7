"""Build the local stand-ins for the Lambdas: one event-source runner per consumer, and one
for the decision service; shared by `rides consume`, `rides decide` and the demo."""

from __future__ import annotations

import time
from collections.abc import Callable

from rides import RidesError
from rides.local.runner import EventSourceRunner, LambdaContext, model_watcher
from rides.settings import CONSUMERS, ConsumerSpec, EventSourceSettings, StackNames

DECISION_FUNCTION = "ride-decision-service"


class NoModel(RidesError):
    pass


def consumer_env(spec: ConsumerSpec, base_env: dict) -> tuple[dict, Callable[[], None]]:
    """A consumer's own environment (model, output field) and the watcher that applies
    `rides promote` to it."""
    env = {**base_env, "MODEL_NAME": spec.model_name, "PREDICTION_FIELD": spec.prediction_field}
    if spec.key != "duration":  # MODEL_URI/MODEL_VERSION in the environment are the duration model's
        env.pop("MODEL_URI", None)
        env.pop("MODEL_VERSION", None)
    watcher = model_watcher(spec.model_name, env)
    watcher()
    if not env.get("MODEL_URI"):
        raise NoModel(
            f"no {spec.model_name} model to serve: run `rides train --consumer {spec.key}` and "
            f"`rides promote --model-name {spec.model_name}`, or set MODEL_URI"
        )
    return env, watcher


def decision_env(base_env: dict, names: StackNames) -> dict:
    return {"DECISIONS_TABLE": names.decisions_table, "DECISIONS_STREAM_NAME": names.decisions_stream, **base_env}


def local_handler(function_name: str, base_env: dict, names: StackNames) -> Callable:
    """The handler the local runner runs as `function_name` (what `rides redrive` invokes)."""
    if function_name == DECISION_FUNCTION:
        from lambda_function.decision_handler import handler_for as decision_handler_for

        return decision_handler_for(decision_env(base_env, names))
    from lambda_function.handler import handler_for

    spec = next((spec for spec in CONSUMERS.values() if spec.function_name == function_name), None)
    if spec is None:
        raise NoModel(f"no local function named {function_name}")
    return handler_for(consumer_env(spec, base_env)[0])


def consumer_runner(
    spec: ConsumerSpec,
    base_env: dict,
    *,
    stream: str,
    settings: EventSourceSettings,
    failures_url: str,
    function_timeout_s: float = 60.0,
    kinesis=None,
    sqs=None,
) -> EventSourceRunner:
    """A consumer with its own environment (model, output field) and checkpoints."""
    from lambda_function.handler import handler_for

    env, watcher = consumer_env(spec, base_env)
    return EventSourceRunner(
        stream,
        handler=handler_for(env),
        settings=settings,
        function_name=spec.function_name,
        function_timeout_s=function_timeout_s,
        kinesis=kinesis,
        sqs=sqs,
        on_failure_queue_url=failures_url,
        on_poll=watcher,
    )


def decision_runner(
    base_env: dict,
    names: StackNames,
    *,
    settings: EventSourceSettings,
    failures_url: str,
    sweep_every_s: float = 5.0,
    function_timeout_s: float = 60.0,
    kinesis=None,
    sqs=None,
) -> EventSourceRunner:
    """The decision service on the predictions stream, with its timeout sweep every few seconds
    (on AWS an EventBridge schedule invokes the same handler)."""
    from lambda_function.decision_handler import handler_for

    handler = handler_for(decision_env(base_env, names))
    last = [0.0]

    def sweep() -> None:
        if time.monotonic() - last[0] >= sweep_every_s:
            last[0] = time.monotonic()
            handler({}, LambdaContext("ride-decisions-sweep", function_timeout_s, "local"))

    return EventSourceRunner(
        names.predictions_stream,
        handler=handler,
        settings=settings,
        function_name=DECISION_FUNCTION,
        function_timeout_s=function_timeout_s,
        kinesis=kinesis,
        sqs=sqs,
        on_failure_queue_url=failures_url,
        on_poll=sweep,
    )
