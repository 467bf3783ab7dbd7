"""AWS Lambda entry point of the decision service: a thin adapter to `rides.decision`.

Kinesis events (from `ride-predictions`) are gathered per ride; an EventBridge schedule
(any other event) runs the sweep that decides rides whose predictions stopped coming.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger
from botocore.config import Config

from rides.aws import lean_clients
from rides.deadletter import DeadLetterSink
from rides.decision import DecisionConfig, DecisionStore, process_predictions, sweep
from rides.publish import KinesisPublisher

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-decisions"))
RESERVE_SECONDS = 2.0
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
_resources: dict[str, object] = {}


def _aws(service: str):
    # All three at once, from one session whose parsed data files are then freed (rides.aws).
    if not _resources:
        _resources.update(lean_clients(("kinesis", "sqs"), _CONFIG, resources=("dynamodb",)))
    return _resources[service]


def lambda_handler(event, context):
    return handle(event, context, os.environ)


def handler_for(env: dict[str, str]):
    """A handler configured from `env` (the local runner's way)."""

    def handler(event, context):
        return handle(event, context, env)

    return handler


def handle(event, context, env):
    config = DecisionConfig.from_env(env)
    store = DecisionStore(_aws("dynamodb").Table(config.table_name), config.retention_days)
    publisher = KinesisPublisher(_aws("kinesis"), config.decisions_stream_name, concurrency=2)

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000.0 - RESERVE_SECONDS

    if "Records" not in (event or {}):  # the schedule
        result = sweep(config, store=store, publisher=publisher, time_left=time_left)
        logger.info("sweep", extra={"sweep": result})
        return result
    dead_letters = DeadLetterSink(
        _aws("sqs") if config.dead_letter_queue_url else None, config.dead_letter_queue_url, logger=logger
    )
    response, report = process_predictions(
        event["Records"], config, store=store, publisher=publisher, dead_letters=dead_letters, time_left=time_left
    )
    logger.info("batch processed", extra={"batch": report.__dict__})
    return response
