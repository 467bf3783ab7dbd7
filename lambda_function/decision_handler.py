"""AWS Lambda entry point of the decision service: a thin adapter to `rides.stream.decision`.

Kinesis events (from `ride-predictions`) are gathered per ride; an EventBridge schedule
(any other event) runs the sweep that decides rides whose predictions stopped coming and
publishes decisions that were stored but not yet published.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from aws_lambda_powertools import Logger

from rides.stream.aws import LAMBDA_CLIENT_CONFIG, RESERVE_SECONDS, lean_clients
from rides.stream.deadletter import DeadLetterSink, QueueSender
from rides.stream.decision import DecisionConfig, DecisionStore, process_predictions, sweep
from rides.stream.publish import KinesisPublisher

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-decisions"))
_clients: dict[str, object] = {}


def _client(service: str):
    # All three at once, from one session whose parsed data files are then freed (rides.stream.aws).
    if not _clients:
        _clients.update(lean_clients(("kinesis", "sqs", "dynamodb"), LAMBDA_CLIENT_CONFIG))
    return _clients[service]


def lambda_handler(event, context):
    return handle(event, context, os.environ)


def handler_for(env: dict[str, str]):
    """A handler configured from `env` (the local runner's way)."""

    def handler(event, context):
        return handle(event, context, env)

    return handler


def handle(event, context, env):
    config = DecisionConfig.from_env(env)
    store = DecisionStore(_client("dynamodb"), config.table_name)
    publisher = KinesisPublisher(_client("kinesis"), config.decisions_stream_name, concurrency=2)
    # Rides decided `review` also go to the review queue, for a person to act on (`rides review`).
    reviews = (
        QueueSender(_client("sqs"), config.review_queue_url, logger=logger, what="review queue")
        if config.review_queue_url
        else None
    )

    def time_left() -> float:
        return context.get_remaining_time_in_millis() / 1000.0 - RESERVE_SECONDS

    if "Records" not in (event or {}):  # the schedule
        result = asdict(sweep(config, store=store, publisher=publisher, reviews=reviews, time_left=time_left))
        logger.info("sweep", extra={"sweep": result})
        return result
    dead_letters = DeadLetterSink(
        _client("sqs") if config.dead_letter_queue_url else None, config.dead_letter_queue_url, logger=logger
    )
    response, report = process_predictions(
        event["Records"],
        config,
        store=store,
        publisher=publisher,
        dead_letters=dead_letters,
        reviews=reviews,
        time_left=time_left,
        logger=logger,
    )
    logger.info("batch processed", extra={"batch": asdict(report)})
    return response
