"""AWS Lambda entry point of the decision service: a thin adapter to `rides.stream.decision`.

Kinesis events (from `ride-predictions`) are gathered per ride; an EventBridge schedule
(any other event) runs the sweep that decides rides whose predictions stopped coming and
publishes decisions that were stored but not yet published.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from aws_lambda_powertools import Logger

from rides.stream.deadletter import DeadLetterSink, QueueSender
from rides.stream.decision import DecisionConfig, DecisionStore, process_predictions, sweep
from rides.stream.publish import KinesisPublisher
from rides.stream.runtime import Clients, deadline, function_name
from rides.stream.runtime import handler_for as _handler_for

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-decisions"))
_clients = Clients(("kinesis", "sqs", "dynamodb"))


def lambda_handler(event, context):
    return handle(event, context, os.environ)


def handler_for(env: dict[str, str]):
    """A handler configured from `env` (the local runner's way)."""
    return _handler_for(handle, env)


def handle(event, context, env):
    config = DecisionConfig.from_env(env)
    aws = _clients.of(function_name(context, env))
    store = DecisionStore(aws["dynamodb"], config.table_name)
    publisher = KinesisPublisher(
        aws["kinesis"], config.decisions_stream_name, concurrency=2, aggregate=config.publish_aggregated
    )
    # Rides decided `review` also go to the review queue, for a person to act on (`rides review`).
    reviews = (
        QueueSender(aws["sqs"], config.review_queue_url, logger=logger, what="review queue")
        if config.review_queue_url
        else None
    )

    time_left = deadline(context)
    if "Records" not in (event or {}):  # the schedule
        result = asdict(sweep(config, store=store, publisher=publisher, reviews=reviews, time_left=time_left))
        logger.info("sweep", extra={"sweep": result})
        return result
    dead_letters = DeadLetterSink(
        aws["sqs"] if config.dead_letter_queue_url else None, config.dead_letter_queue_url, logger=logger
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
