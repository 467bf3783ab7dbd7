"""AWS Lambda entry point of a model consumer: a thin adapter from the Kinesis event to
`rides.stream.consumer` (`lambda_function.handler.lambda_handler`).

Clients and the model are created once per container and reused across invocations.
"""

from __future__ import annotations

import gc
import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from rides.stream.consumer import ConsumerConfig, process_records
from rides.stream.failures import Failure
from rides.stream.model import ModelLoadError, get_model
from rides.stream.publish import KinesisPublisher
from rides.stream.runtime import Invocation, StreamFunction

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-consumer"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "rides"))


def warm_up(env) -> bool:
    """Load the model during Lambda's init phase, before the first batch waits for it.

    It also comes before the clients on purpose: the model loader's S3 client is freed
    before they are built, which keeps the container's peak memory a few MB lower. A model
    that cannot be loaded now is tried again, and reported, by the first batch.
    """
    try:
        config = ConsumerConfig.from_env(env)
        get_model(config.model_uri, name=config.model_name, version=config.model_version)
    except (ValueError, ModelLoadError) as exc:
        logger.warning("model not loaded at start-up; the first batch will try again", extra={"error": str(exc)})
        return False
    return True


# Only inside a Lambda container (the runtime sets the function name): importing the module
# elsewhere (tests, the local runner serving several consumers) must not fetch a model.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("MODEL_URI"):
    warm_up(os.environ)
    # What init built (modules, the model) lives as long as the container: keep the cycle
    # collector from scanning it again in every full collection. A 10,000-record batch
    # triggers one, which took ~35 of its ~130 ms; frozen, ~4.
    gc.freeze()


def run(call: Invocation):
    # Read per invocation: the local runner changes MODEL_URI on promotion without a restart.
    config = ConsumerConfig.from_env(call.env)
    publisher = (
        None
        if config.dry_run
        else KinesisPublisher(
            call.aws["kinesis"],
            config.predictions_stream_name,
            concurrency=config.publish_concurrency,
            aggregate=config.publish_aggregated,
        )
    )
    response, report = process_records(
        call.records, config, publisher=publisher, **call.batch_io(config.dead_letter_queue_url)
    )
    logger.info("batch processed", extra={"batch": report.as_dict(), "model_uri": config.model_uri})
    metrics.add_dimension(name="model", value=config.model_name)
    metrics.add_metadata(key="model_version", value=report.model_version or "none")
    for name, value in (
        ("RecordsIn", report.records),
        ("AggregatedUserRecords", report.user_records),  # rides that came inside KPL-aggregated records
        ("Predicted", report.predicted),
        ("Published", report.published),
        ("DeadLettered", report.dead_lettered),
        ("Failed", report.failed),
        ("Retries", report.retries),
        # 1 for a batch the model could not serve (it loaded wrong or not at all): alarmed on.
        ("ModelFaults", int(any(report.errors.get(code) for code in (Failure.MODEL_FAULT, Failure.MODEL_LOAD_ERROR)))),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name="BatchSeconds", unit=MetricUnit.Seconds, value=report.seconds)
    metrics.flush_metrics()
    # With POWERTOOLS_METRICS_DISABLED, flush prints nothing and keeps the values: drop them,
    # or a long-lived runner process accumulates every batch's metrics.
    metrics.clear_metrics()
    return response


# AWS_ENDPOINT_URL (boto3's standard variable) points its clients at an emulator.
function = StreamFunction(("kinesis", "sqs"), run, logger=logger)
lambda_handler = function.lambda_handler
handler_for = function.handler_for  # the local runner's several consumers, each from its own env
