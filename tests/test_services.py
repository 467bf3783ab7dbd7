"""The local stand-ins for the Lambdas are wired once (LocalDeployment), as Terraform wires the
functions: the names, the queues, each consumer's own model, the decision service's table."""

from __future__ import annotations

import os

import pytest

from rides.local.services import LocalDeployment, NoModel
from rides.models.promote import roll_out_local
from rides.models.registry import Registered
from rides.settings import CONSUMERS, StackNames


@pytest.fixture
def queues(aws):
    names = StackNames()
    dead = aws["sqs"].create_queue(QueueName=names.dead_letter_queue)["QueueUrl"]
    failed = aws["sqs"].create_queue(QueueName=names.failed_batches_queue)["QueueUrl"]
    aws["kinesis"].create_stream(StreamName=names.input_stream, ShardCount=1)
    return {"names": names, "dead": dead, "failed": failed, **aws}


def test_every_function_gets_the_names_and_queues_terraform_would_give_it(queues, onnx_model_dir):
    local = LocalDeployment.on_stack(
        queues["sqs"], env={"MODEL_URI": str(onnx_model_dir), "MODEL_VERSION": "4"}, DRY_RUN="true", DECISION_RULES=None
    )
    names = queues["names"]
    assert local.env["DEAD_LETTER_QUEUE_URL"] == queues["dead"]
    assert local.env["PREDICTIONS_STREAM_NAME"] == names.predictions_stream
    assert local.env["DRY_RUN"] == "true" and "DECISION_RULES" not in local.env
    assert local.failures_url == queues["failed"]
    runner = local.consumer(CONSUMERS["duration"])
    assert (runner.stream_name, runner.function_name) == (names.input_stream, "ride-duration-consumer")
    decisions = local.decision_env()
    assert (decisions["DECISIONS_TABLE"], decisions["DECISIONS_STREAM_NAME"]) == (
        names.decisions_table,
        names.decisions_stream,
    )


def test_model_uri_is_the_duration_models_and_the_others_serve_their_promotion_saying_so(queues, onnx_model_dir):
    local = LocalDeployment.on_stack(queues["sqs"], env={"MODEL_URI": str(onnx_model_dir), "MODEL_VERSION": "4"})
    local.consumer(CONSUMERS["duration"])
    # The fare consumer does not serve the duration model: without a promotion it has none.
    with pytest.raises(NoModel, match="no ride-fare model to serve"):
        local.consumer(CONSUMERS["fare"])
    roll_out_local(Registered("ride-fare", "2", str(onnx_model_dir), "run", "production"))
    local.consumer(CONSUMERS["fare"])
    assert local.describe() == (
        f"ride-duration-consumer: ride-duration from {onnx_model_dir} (MODEL_URI); "
        f"ride-fare-consumer: ride-fare from {onnx_model_dir} (promoted)"
    )


def test_redrive_gets_each_functions_own_handler_and_an_unknown_one_is_refused(queues, onnx_model_dir):
    from rides.local.reader import drain_queue
    from tests.helpers import FakeContext, kinesis_event, ride

    local = LocalDeployment.on_stack(queues["sqs"], env={"MODEL_URI": str(onnx_model_dir)}, DRY_RUN="true")
    event = kinesis_event([ride(1)])
    # the consumer predicts the ride (dry run: nothing published) ...
    answer = local.handler("ride-duration-consumer")(event, FakeContext())
    assert answer["batchItemFailures"] == [] and answer["predictions"][0]["model"] == "ride-duration"
    assert drain_queue(queues["sqs"], queues["dead"]) == []
    # ... the decision service reads prediction records: a ride event is a dead letter there
    assert local.handler("ride-decision-service")(event, FakeContext()) == {"batchItemFailures": []}
    [letter] = drain_queue(queues["sqs"], queues["dead"])
    assert letter["error"].startswith("model must be") and letter["source"]["sequence_number"] == f"{1:056d}"
    with pytest.raises(NoModel, match="no local function named nope"):
        local.handler("nope")


def test_the_demo_leaves_the_processs_environment_as_it_found_it(monkeypatch):
    from rides.local.demo import restores_environ

    monkeypatch.setenv("RIDES_HOME", "/before")

    @restores_environ
    def points_at_its_own_stack():
        os.environ["RIDES_HOME"] = "/demo"
        os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1"
        raise RuntimeError("even when it fails")

    with pytest.raises(RuntimeError):
        points_at_its_own_stack()
    assert os.environ["RIDES_HOME"] == "/before" and "AWS_ENDPOINT_URL" not in os.environ


def test_a_promotion_over_model_uri_is_reported_as_what_is_served(queues, onnx_model_dir, tmp_path):
    """The watcher applies a promotion at start, over MODEL_URI: the report says what serves."""
    promoted = tmp_path / "promoted"
    promoted.symlink_to(onnx_model_dir)
    roll_out_local(Registered("ride-duration", "5", str(promoted), "run", "production"))
    local = LocalDeployment.on_stack(queues["sqs"], env={"MODEL_URI": str(onnx_model_dir), "MODEL_VERSION": "4"})
    local.consumer(CONSUMERS["duration"])
    assert local.describe() == f"ride-duration-consumer: ride-duration from {promoted} (promoted)"


def test_the_shadow_and_the_evaluation_are_wired_as_terraform_wires_them(queues, onnx_model_dir, tmp_path):
    from rides.models.promote import roll_out_local
    from rides.settings import SHADOW

    names = queues["names"]
    for stream in (names.predictions_stream, names.completions_stream):
        queues["kinesis"].create_stream(StreamName=stream, ShardCount=1)
    local = LocalDeployment.on_stack(queues["sqs"], env={"MODEL_URI": str(onnx_model_dir), "MODEL_VERSION": "4"})
    with pytest.raises(NoModel, match="--as shadow"):
        local.shadow_consumer()  # nothing promoted as the shadow yet
    roll_out_local(Registered("ride-duration", "5", str(onnx_model_dir), "run", "shadow"), role="shadow")
    shadow = local.shadow_consumer()
    assert (shadow.stream_name, shadow.function_name) == (names.input_stream, SHADOW.function_name)
    assert "ride-duration-shadow-consumer: ride-duration from" in local.describe()
    runners = local.evaluation()
    assert [r.stream_name for r in runners] == [names.completions_stream, names.input_stream]
    assert {r.settings.batch_size for r in runners} == {2000}
    env = local.evaluation_env()
    assert env["EVALUATIONS_TABLE"] == names.evaluations_table
    assert env["DECISIONS_TABLE"] == names.decisions_table  # the rides' predictions are read there
    assert env["DRIFT_REFERENCE_URI"] == str(onnx_model_dir)  # the production duration model's training data
