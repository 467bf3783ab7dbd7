"""What every stream function's entry point shares (rides.stream.runtime), made inside the tests:
the handlers in lambda_function/ make theirs at import, which no test can vary."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from moto import mock_aws

from rides.stream.aws import LAMBDA_CLIENT_CONFIG, RESERVE_SECONDS
from rides.stream.runtime import (
    Clients,
    Invocation,
    StreamFunction,
    client_config,
    deadline,
    function_name,
)


class Context:
    def __init__(self, name: str | None = "ride-duration-consumer", millis: int = 60_000):
        if name is not None:
            self.function_name = name
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def invocations():
    seen: list[Invocation] = []

    def run(invocation: Invocation):
        seen.append(invocation)
        return {"batchItemFailures": [], "n": len(seen)}

    return seen, run


def user_agent(client) -> str:
    return client.meta.config.user_agent_extra or ""


def test_a_function_makes_its_clients_on_its_first_call_and_keeps_them():
    seen, run = invocations()
    logger = logging.getLogger("rides.test.runtime")
    function = StreamFunction(iter(("sqs", "kinesis")), run, logger=logger)
    assert not function.clients and function.clients.services == ("sqs", "kinesis")
    handler = function.handler_for({"PREDICTIONS_STREAM_NAME": "p"})
    with mock_aws():
        assert handler({"Records": []}, Context()) == {"batchItemFailures": [], "n": 1}
        assert handler({"Records": []}, Context()) == {"batchItemFailures": [], "n": 2}
    first, second = seen
    assert set(first.aws) == {"sqs", "kinesis"}
    assert first.aws is second.aws and function.clients  # made once, kept for the container
    assert first.env == {"PREDICTIONS_STREAM_NAME": "p"} and first.logger is logger
    assert user_agent(first.aws["sqs"]).endswith("rides-function/ride-duration-consumer")
    assert first.event == {"Records": []} and first.time_left() == pytest.approx(60 - RESERVE_SECONDS)


def test_each_function_served_by_one_process_has_clients_of_its_own():
    seen, run = invocations()
    function = StreamFunction(("sqs",), run, logger=None)
    handler = function.handler_for({})
    with mock_aws():
        handler({}, Context("ride-fare-consumer"))
        handler({}, Context("ride-tip-consumer"))
        handler({}, Context("ride-fare-consumer"))
    fare, tip, fare_again = (s.aws["sqs"] for s in seen)
    assert fare is fare_again and fare is not tip
    assert user_agent(tip).endswith("rides-function/ride-tip-consumer")
    function.clients.clear()
    assert not function.clients
    with mock_aws():
        handler({}, Context("ride-fare-consumer"))
    assert seen[-1].aws["sqs"] is not fare  # cleared: made again


def test_lambda_handler_reads_the_process_environment(monkeypatch):
    seen, run = invocations()
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", "http://queue")
    with mock_aws():
        StreamFunction(("sqs",), run, logger=None).lambda_handler({"Records": [{}]}, Context())
    assert seen[0].env["DEAD_LETTER_QUEUE_URL"] == "http://queue"


def test_a_call_is_counted_against_the_function_lambda_names_or_else_the_environment():
    env = {"AWS_LAMBDA_FUNCTION_NAME": "from-lambda", "POWERTOOLS_SERVICE_NAME": "from-powertools"}
    assert function_name(Context("from-context"), env) == "from-context"
    assert function_name(Context(None), env) == "from-lambda"
    assert function_name(Context(""), env) == "from-lambda"
    assert function_name(None, {"POWERTOOLS_SERVICE_NAME": "from-powertools"}) == "from-powertools"
    assert function_name(None, {}) == "rides"


def test_a_functions_clients_keep_the_lambda_limits_and_name_the_function():
    config = client_config("ride-tip-consumer")
    assert config.user_agent_extra == "rides-function/ride-tip-consumer"
    for setting in ("connect_timeout", "read_timeout", "retries", "max_pool_connections"):
        assert getattr(config, setting) == getattr(LAMBDA_CLIENT_CONFIG, setting)


def test_the_deadline_is_the_remaining_time_less_the_reserve_read_at_each_call():
    context = Context(millis=10_000)
    time_left = deadline(context)
    assert time_left() == pytest.approx(10 - RESERVE_SECONDS)
    context.millis = 2_500
    assert time_left() == pytest.approx(2.5 - RESERVE_SECONDS)


@pytest.mark.parametrize(
    "event, scheduled, records",
    [
        (None, True, []),
        ({}, True, []),
        ({"source": "aws.events"}, True, []),
        ({"Records": None}, False, []),
        ({"Records": [{"n": 1}]}, False, [{"n": 1}]),
    ],
)
def test_an_invocation_without_records_is_a_scheduled_sweep(event, scheduled, records):
    invocation = Invocation(event, {}, {}, lambda: 1.0, None)
    assert invocation.scheduled is scheduled and invocation.records == records


def test_dead_letters_go_to_the_queue_when_there_is_one_and_to_the_log_otherwise():
    sqs, logger = object(), logging.getLogger("rides.test.runtime")
    invocation = Invocation({}, {}, {"sqs": sqs}, lambda: 5.0, logger)
    queued = invocation.dead_letters("http://queue")
    assert (queued.client, queued.queue_url, queued.logger) == (sqs, "http://queue", logger)
    logged = Invocation({}, {}, {}, lambda: 5.0, logger).dead_letters(None)  # no sqs client needed
    assert (logged.client, logged.queue_url) == (None, None)
    io = invocation.batch_io("http://queue")
    assert set(io) == {"dead_letters", "time_left", "logger"}
    assert io["dead_letters"].queue_url == "http://queue" and io["time_left"]() == 5.0 and io["logger"] is logger


def test_clients_are_false_until_made():
    clients = Clients(["dynamodb"])
    assert not clients and clients.services == ("dynamodb",)
    with mock_aws():
        made = clients.of("f")
    assert clients and list(made) == ["dynamodb"] and clients.of("f") is made
    assert SimpleNamespace(**made).dynamodb.meta.service_model.service_name == "dynamodb"
