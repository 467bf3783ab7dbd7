"""The local stand-ins for the Lambdas (LocalDeployment): one event-source runner per
consumer and one for the decision service, wired once; and the watcher that applies
`rides promote` to a running consumer."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rides import RidesError
from rides.local.lambda_service import LambdaContext
from rides.local.runner import EventSourceRunner
from rides.settings import CONSUMERS, SHADOW, ConsumerSpec, EventSourceSettings, StackNames, event_source_for

log = logging.getLogger(__name__)
DECISION_FUNCTION = "ride-decision-service"
EVALUATION_FUNCTION = "ride-evaluation"


class NoModel(RidesError):
    pass


def consumer_env(spec: ConsumerSpec, base_env: dict) -> tuple[dict, Callable[[], None], str]:
    """A consumer's own environment (model, output field), the watcher that applies
    `rides promote` to it, and where its model came from. MODEL_URI/MODEL_VERSION in the base
    environment name the duration model, as on the duration Lambda; the fare and tip consumers
    serve what was promoted for them (and say so: see LocalDeployment.describe)."""
    env = {
        **base_env,
        "MODEL_NAME": spec.model_name,
        "PREDICTION_FIELD": spec.prediction_field,
        "MODEL_ROLE": spec.role,
    }
    if spec.key != "duration":
        env.pop("MODEL_URI", None)
        env.pop("MODEL_VERSION", None)
    given = env.get("MODEL_URI")
    watcher = model_watcher(spec.control_name, env)
    watcher()  # a promotion, if there is one, replaces MODEL_URI now
    source = "MODEL_URI" if given and env.get("MODEL_URI") == given else "promoted"
    if not env.get("MODEL_URI"):
        promote = (
            f"`rides promote --model-name {spec.model_name} --version N --as shadow`"
            if spec.role == "shadow"
            else f"`rides promote --model-name {spec.model_name}`"
        )
        raise NoModel(
            f"no {spec.model_name} model to serve as {spec.role}: train one and run {promote}, or set MODEL_URI"
        )
    return env, watcher, source


@dataclass
class LocalDeployment:
    """The local stand-ins for the Lambdas, wired once, as Terraform wires them on AWS: every
    function's environment (the given one, which the CLI has pointed at the local stack, plus
    the names and queue URLs Terraform would set), the event source settings, the
    failed-batches queue and the clients. `rides consume`, `decide`, `redrive` and the demo
    build their functions here."""

    env: dict[str, str]
    names: StackNames
    failures_url: str
    settings: EventSourceSettings = field(default_factory=EventSourceSettings)
    kinesis: Any = None
    sqs: Any = None
    served: dict[str, str] = field(default_factory=dict)  # function → where its model came from

    @classmethod
    def on_stack(
        cls,
        sqs,
        *,
        env: dict | None = None,
        names: StackNames | None = None,
        settings: EventSourceSettings | None = None,
        kinesis=None,
        **variables: str | None,
    ) -> LocalDeployment:
        """`env` (default: this process's) with the stack's names and queues; `variables` set
        or override function environment variables (DRY_RUN, DECISION_RULES, ...)."""
        names = names or StackNames.from_env()
        base = dict(os.environ if env is None else env)
        base.setdefault("PREDICTIONS_STREAM_NAME", names.predictions_stream)
        if "DEAD_LETTER_QUEUE_URL" not in base:
            base["DEAD_LETTER_QUEUE_URL"] = sqs.get_queue_url(QueueName=names.dead_letter_queue)["QueueUrl"]
        base.update({key: value for key, value in variables.items() if value is not None})
        failures = sqs.get_queue_url(QueueName=names.failed_batches_queue)["QueueUrl"]
        return cls(base, names, failures, settings or EventSourceSettings(), kinesis, sqs)

    def consumer(self, spec: ConsumerSpec, *, stream: str | None = None, function_timeout_s: float = 60.0):
        """A consumer with its own environment (model, output field) and checkpoints."""
        from lambda_function.handler import handler_for

        env, watcher, source = consumer_env(spec, self.env)
        self.served[spec.function_name] = f"{spec.model_name} from {env['MODEL_URI']} ({source})"
        return EventSourceRunner(
            stream or self.names.input_stream,
            handler=handler_for(env),
            settings=event_source_for("consumer", self.settings),
            function_name=spec.function_name,
            function_timeout_s=function_timeout_s,
            kinesis=self.kinesis,
            sqs=self.sqs,
            on_failure_queue_url=self.failures_url,
            on_poll=watcher,
        )

    def shadow_consumer(self, *, function_timeout_s: float = 60.0):
        """The duration model's challenger on the same events (rides promote --as shadow)."""
        return self.consumer(SHADOW, function_timeout_s=function_timeout_s)

    def evaluation_env(self) -> dict:
        env = {
            "EVALUATIONS_TABLE": self.names.evaluations_table,
            "DECISIONS_TABLE": self.names.decisions_table,
            **self.env,
        }
        from rides.models.promote import read_local_model

        if "DRIFT_REFERENCE_URI" not in env:
            # the production duration model's training data is the drift reference
            promoted = read_local_model(CONSUMERS["duration"].control_name) or {}
            if promoted.get("MODEL_URI") or env.get("MODEL_URI"):
                env["DRIFT_REFERENCE_URI"] = promoted.get("MODEL_URI") or env["MODEL_URI"]
        # as Terraform sets them: the consumers' models, and the challenger's when one runs
        env.setdefault("EVALUATED_MODELS", ",".join(spec.model_name for spec in CONSUMERS.values()))
        if "SHADOW_MODELS" not in env and (read_local_model(SHADOW.control_name) or {}).get("MODEL_URI"):
            env["SHADOW_MODELS"] = SHADOW.model_name
        return env

    def evaluation(self, *, sweep_every_s: float = 15.0, function_timeout_s: float = 60.0) -> list:
        """The evaluation consumer, one runner per stream it is mapped to (as its two event
        source mappings on AWS): completions, ride events (drift); the completions' runner
        sweeps the waiting completions every 15 s (on AWS a schedule invokes it every minute;
        a waiting ride is read again at about 1, 2, 4, 8… intervals of its wait)."""
        from lambda_function.evaluation_handler import handler_for

        # its sweeps' interval: how often a waiting completion's ride is read again (store.due)
        handler = handler_for({"SWEEP_INTERVAL_SECONDS": str(sweep_every_s), **self.evaluation_env()})
        last = [0.0]

        def sweep() -> None:
            if time.monotonic() - last[0] >= sweep_every_s:
                last[0] = time.monotonic()
                handler({}, LambdaContext(f"{EVALUATION_FUNCTION}-sweep", function_timeout_s, "local"))

        return [
            EventSourceRunner(
                stream,
                handler=handler,
                settings=event_source_for("evaluation", self.settings),
                function_name=EVALUATION_FUNCTION,
                function_timeout_s=function_timeout_s,
                kinesis=self.kinesis,
                sqs=self.sqs,
                on_failure_queue_url=self.failures_url,
                on_poll=sweep if stream == self.names.completions_stream else None,
            )
            for stream in (self.names.completions_stream, self.names.input_stream)
        ]

    def decision_env(self) -> dict:
        env = {
            "DECISIONS_TABLE": self.names.decisions_table,
            "DECISIONS_STREAM_NAME": self.names.decisions_stream,
            **self.env,
        }
        if "REVIEW_QUEUE_URL" not in env and self.sqs is not None:
            # A stack made before the review queue existed: decisions still go to the stream.
            with contextlib.suppress(self.sqs.exceptions.QueueDoesNotExist):
                env["REVIEW_QUEUE_URL"] = self.sqs.get_queue_url(QueueName=self.names.review_queue)["QueueUrl"]
        return env

    def decision_service(self, *, sweep_every_s: float = 5.0, function_timeout_s: float = 60.0):
        """The decision service on the predictions stream, with its timeout sweep every few
        seconds (on AWS an EventBridge schedule invokes the same handler)."""
        from lambda_function.decision_handler import handler_for

        handler = handler_for(self.decision_env())
        last = [0.0]

        def sweep() -> None:
            if time.monotonic() - last[0] >= sweep_every_s:
                last[0] = time.monotonic()
                handler({}, LambdaContext("ride-decisions-sweep", function_timeout_s, "local"))

        return EventSourceRunner(
            self.names.predictions_stream,
            handler=handler,
            settings=event_source_for("decisions", self.settings),
            function_name=DECISION_FUNCTION,
            function_timeout_s=function_timeout_s,
            kinesis=self.kinesis,
            sqs=self.sqs,
            on_failure_queue_url=self.failures_url,
            on_poll=sweep,
        )

    def handler(self, function_name: str) -> Callable:
        """The handler the local runner runs as `function_name` (what `rides redrive` invokes)."""
        if function_name == DECISION_FUNCTION:
            from lambda_function.decision_handler import handler_for as decision_handler_for

            return decision_handler_for(self.decision_env())
        if function_name == EVALUATION_FUNCTION:
            from lambda_function.evaluation_handler import handler_for as evaluation_handler_for

            return evaluation_handler_for(self.evaluation_env())
        from lambda_function.handler import handler_for

        spec = next((spec for spec in (*CONSUMERS.values(), SHADOW) if spec.function_name == function_name), None)
        if spec is None:
            raise NoModel(f"no local function named {function_name}")
        return handler_for(consumer_env(spec, self.env)[0])

    def describe(self) -> str:
        return "; ".join(f"{function}: {model}" for function, model in self.served.items())


def model_watcher(model_name: str, env: dict | None = None) -> Callable[[], None]:
    """Applies `rides promote` to a consumer's environment (`env`, by default this process's):
    the handler reads MODEL_URI per invocation."""
    env = os.environ if env is None else env
    from rides.models.promote import local_control_file, read_local_model

    path = local_control_file(model_name)
    seen: list[float] = [-1.0]

    def check() -> None:
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == seen[0]:
            return
        seen[0] = mtime
        control = read_local_model(model_name)
        if control and control.get("MODEL_URI"):
            if env.get("MODEL_URI") != control["MODEL_URI"]:
                log.info(  # news, not a warning: `rides consume` shows it, `make run` says it its own way
                    "serving %s version %s from %s", model_name, control.get("MODEL_VERSION"), control["MODEL_URI"]
                )
            env["MODEL_URI"] = control["MODEL_URI"]
            env["MODEL_VERSION"] = str(control.get("MODEL_VERSION") or "")

    return check
