"""AWS Lambda entry point of the decision service: a thin adapter to `rides.decision`.

Kinesis events (from `ride-predictions`) are gathered per ride; an EventBridge schedule
(any other event) runs the sweep that decides rides whose predictions stopped coming.
"""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from rides.deadletter import DeadLetterSink
from rides.decision import DecisionConfig, DecisionStore, process_predictions, sweep
from rides.publish import KinesisPublisher

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-decisions"))
RESERVE_SECONDS = 2.0
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
_resources: dict[str, object] = {}


def _get(kind: str, name: str):
    if (kind, name) not in _resources:
        factory = boto3.resource if kind == "resource" else boto3.client
        _resources[(kind, name)] = factory(name, config=_CONFIG)
    return _resources[(kind, name)]


def lambda_handler(event, context):
    return handle(event, context, os.environ)


def handler_for(env: dict[str, str]):
    """A handler configured from `env` (the local runner's way)."""

    def handler(event, context):
        return handle(event, context, env)

    return handler


def handle(event, context, env):
    config = DecisionConfig.from_env(env)
    store = DecisionStore(_get("resource", "dynamodb").Table(config.table_name), config.retention_days)
    publisher = KinesisPublisher(_get("client", "kinesis"), config.decisions_stream_name, concurrency=2)

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000.0 - RESERVE_SECONDS

    if "Records" not in (event or {}):  # the schedule
        result = sweep(config, store=store, publisher=publisher, time_left=time_left)
        logger.info("sweep", extra={"sweep": result})
        return result
    dead_letters = DeadLetterSink(
        _get("client", "sqs") if config.dead_letter_queue_url else None, config.dead_letter_queue_url, logger=logger
    )
    response, report = process_predictions(
        event["Records"], config, store=store, publisher=publisher, dead_letters=dead_letters, time_left=time_left
    )
    logger.info("batch processed", extra={"batch": report.__dict__})
    return response
