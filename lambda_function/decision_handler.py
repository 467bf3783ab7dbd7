"""AWS Lambda entry point of the decision service: a thin adapter to `rides.stream.decision`.

Kinesis events (from `ride-predictions`) are gathered per ride; an EventBridge schedule
(any other event) runs the sweep that decides rides whose predictions stopped coming and
publishes decisions that were stored but not yet published.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from aws_lambda_powertools import Logger

from rides.stream.deadletter import QueueSender
from rides.stream.decision import DecisionConfig, DecisionStore, process_predictions, sweep
from rides.stream.publish import KinesisPublisher
from rides.stream.runtime import Invocation, StreamFunction

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "rides-decisions"))


def run(call: Invocation):
    config = DecisionConfig.from_env(call.env)
    aws = call.aws
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

    if call.scheduled:
        result = asdict(sweep(config, store=store, publisher=publisher, reviews=reviews, time_left=call.time_left))
        logger.info("sweep", extra={"sweep": result})
        return result
    io = call.batch_io(config.dead_letter_queue_url) | {"reviews": reviews}
    response, report = process_predictions(call.records, config, store=store, publisher=publisher, **io)
    logger.info("batch processed", extra={"batch": asdict(report)})
    return response


function = StreamFunction(("kinesis", "sqs", "dynamodb"), run, logger=logger)
lambda_handler = function.lambda_handler
handler_for = function.handler_for  # configured from an env of its own (the local runner's way)
