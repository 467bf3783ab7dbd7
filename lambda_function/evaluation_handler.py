"""AWS Lambda entry point of the evaluation consumer: a thin adapter to `rides.stream.evaluation`.

Mapped to `ride-completions` and `ride-events`, and invoked by a schedule (no `Records`: the
sweep of completions that came before their ride's decision). Emits, per model, version and
role, the newly evaluated pairs' count and error sums (CloudWatch: RMSE = sqrt(SquaredError /
EvaluatedRides) in metric math), and each feature's drift (PSI) this hour, with the largest as
`MaxFeatureDrift` for the alarm.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from rides.stream.evaluation.drift import PREDICTION, DriftCounter, load_reference
from rides.stream.evaluation.service import EvaluationConfig, process_records, sweep
from rides.stream.model import read_metadata
from rides.stream.runtime import Invocation, StreamFunction

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "ride-evaluation"))
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "rides")
_references: dict[str, dict] = {}


def _reference(uri: str | None) -> dict:
    if not uri:
        return {}
    if uri not in _references:  # once per container: the model changes with a deploy
        _references[uri] = load_reference(uri, read_metadata)
    return _references[uri]


def run(call: Invocation):
    config = EvaluationConfig.from_env(call.env)
    env, aws, time_left = call.env, call.aws, call.time_left
    store = config.store(aws["dynamodb"])
    reference = _reference(config.drift_reference_uri)
    drift = DriftCounter(aws["dynamodb"], config.table_name, reference) if reference else None
    if call.scheduled:
        report = sweep(config, store=store, drift=drift, time_left=time_left, logger=logger)
        _emit(report, env)
        result = {"pairs": len(report.evaluated), "waiting": report.waiting}
        logger.info("sweep", extra={"sweep": result})
        return result
    io = call.batch_io(config.dead_letter_queue_url)
    response, report = process_records(call.records, config, store=store, drift=drift, **io)
    _emit(report, env)
    logger.info(
        "batch evaluated",
        extra={
            "batch": {k: v for k, v in asdict(report).items() if k != "evaluated"} | {"pairs": len(report.evaluated)}
        },
    )
    return response


function = StreamFunction(("sqs", "dynamodb"), run, logger=logger)
lambda_handler = function.lambda_handler
handler_for = function.handler_for  # configured from an env of its own (the local runner's way)


def _emit(report, env) -> None:
    if env.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    service = env.get("POWERTOOLS_SERVICE_NAME", "ride-evaluation")
    for (model, version, role), summary in report.summaries().items():
        dimensions = {"service": service, "model": model, "version": version, "role": role}
        for name, value, unit in (
            ("EvaluatedRides", summary.count, MetricUnit.Count),
            ("SquaredError", summary.sum_squared, MetricUnit.NoUnit),
            ("AbsoluteError", summary.sum_absolute, MetricUnit.NoUnit),
            ("Error", summary.sum_error, MetricUnit.NoUnit),
        ):
            _metric(name, value, unit, dimensions)
    drifts = {k: v for k, v in report.drift.items() if v == v}  # NaN: nothing counted yet
    for feature, score in drifts.items():
        _metric("FeatureDrift", score, MetricUnit.NoUnit, {"service": service, "feature": feature})
    features = [v for k, v in drifts.items() if k != PREDICTION]
    if features:
        _metric("MaxFeatureDrift", max(features), MetricUnit.NoUnit, {"service": service})


def _metric(name, value, unit, dimensions) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)
