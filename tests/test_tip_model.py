"""The tip model reads how the rider pays where the ride event says, and predicts for rides
without the field exactly as the model before it did: in training, on held-out rides of
another month, and through the Lambda entry point."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from lambda_function.handler import lambda_handler
from rides.data import DataUnavailable, read_trips
from rides.models import training
from rides.models.training import features_for, onnx_predict, regression_metrics, train
from rides.stream.features import PAYMENT_TYPE, features_from_frame
from tests.helpers import ROOT, FakeContext, kinesis_event, read_stream, ride, upload_dir


@pytest.fixture(scope="module")
def months():
    """Train 2021-01, validate 2021-02, hold out 2021-03 (beside the project in ../shared/data)
    or, where it is not, 2023-02 (shipped)."""
    shared = ROOT.parent / "shared" / "data"
    saved = os.environ.get("RIDES_DATA_DIRS")
    os.environ["RIDES_DATA_DIRS"] = os.pathsep.join(filter(None, (saved, str(shared))))
    try:
        try:
            held_out = read_trips("2021-03")
        except DataUnavailable:
            held_out = read_trips("2023-02")
        return read_trips("2021-01"), read_trips("2021-02"), held_out
    finally:
        os.environ.pop("RIDES_DATA_DIRS") if saved is None else os.environ.update(RIDES_DATA_DIRS=saved)


@pytest.fixture(scope="module")
def tip_models(months):
    """The tip model as trained now, and as it was trained before the payment type existed."""
    from tests.helpers import cached

    train_frame, val_frame, _ = months

    def both():
        now = train(train_frame, val_frame, target="tip_amount")
        saved = dict(training.TARGET_FEATURES)
        training.TARGET_FEATURES.clear()
        try:
            before = train(train_frame, val_frame, target="tip_amount")
        finally:
            training.TARGET_FEATURES.update(saved)
        return now, before

    return cached("tip_models", both)


def test_only_the_tip_model_reads_the_payment_type():
    assert PAYMENT_TYPE in features_for("tip_amount")
    assert PAYMENT_TYPE not in features_for("duration") and PAYMENT_TYPE not in features_for("fare_amount")


def test_with_the_payment_type_tips_are_predicted_better_and_without_it_as_before(months, tip_models):
    now, before = tip_models
    frame = training._with_plausible_target(months[2], "tip_amount")
    paid = frame[frame[PAYMENT_TYPE].notna()]
    actual = paid["tip_amount"].to_numpy()
    features = features_from_frame(paid)
    old = onnx_predict(before.onnx_model, features.matrix(before.features))
    new = onnx_predict(now.onnx_model, features.matrix(now.features))
    assert regression_metrics(actual, new).rmse <= 0.9 * regression_metrics(actual, old).rmse
    assert new.min() >= 0.0  # never a negative tip where the payment type is known (the decision rules)

    # an older producer's rides: the same rides without the field get the old model's answers
    unpaid = features_from_frame(frame.drop(columns=[PAYMENT_TYPE]))
    np.testing.assert_allclose(
        onnx_predict(now.onnx_model, unpaid.matrix(now.features)),
        onnx_predict(before.onnx_model, unpaid.matrix(before.features)),
        rtol=1e-6,
    )
    assert now.metrics_without_payment.rmse == pytest.approx(before.metrics.rmse)


def test_the_consumer_serves_the_tip_model_to_events_with_and_without_the_field(
    consumer_stack, tip_models, monkeypatch, tmp_path
):
    import mlflow.onnx

    aws, dlq = consumer_stack, consumer_stack["dlq"]
    now, before = tip_models
    path = tmp_path / "tip"
    mlflow.onnx.save_model(now.onnx_model, str(path), metadata={"rides_features": list(now.features)})
    uri = upload_dir(aws["s3"], path, "rides-models-stg", "mlflow/3/models/m-tip/artifacts")
    for key, value in {"MODEL_URI": uri, "MODEL_NAME": "ride-tip", "PREDICTION_FIELD": "tip_amount"}.items():
        monkeypatch.setenv(key, value)
    rides = [
        ride("card", 74, 75, 2.0, lpep_pickup_datetime="2021-03-02T18:00:00", payment_type=1),
        ride("cash", 74, 75, 2.0, lpep_pickup_datetime="2021-03-02T18:00:00", payment_type=2),
        ride("old", 74, 75, 2.0, lpep_pickup_datetime="2021-03-02T18:00:00"),
        ride("bad", 74, 75, 2.0, payment_type=9),
    ]
    assert lambda_handler(kinesis_event(rides), FakeContext()) == {"batchItemFailures": []}
    tips = {
        r["prediction"]["ride_id"]: r["prediction"]["tip_amount"]
        for r in read_stream(aws["kinesis"], "ride-predictions")
    }
    assert set(tips) == {"card", "cash", "old"}
    assert tips["card"] > 1.0 and 0.0 <= tips["cash"] < 0.1  # cash tips are $0 in the data the model learned
    old = features_from_frame(
        pd.DataFrame(
            {
                "PULocationID": [74],
                "DOLocationID": [75],
                "trip_distance": [2.0],
                "lpep_pickup_datetime": [np.datetime64("2021-03-02T18:00:00")],
            }
        )
    )
    assert tips["old"] == pytest.approx(
        float(onnx_predict(before.onnx_model, old.matrix(before.features))[0]), rel=1e-5
    )
    letters = aws["sqs"].receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert len(letters) == 1 and "payment_type must be a TLC payment code 1-6, got 9" in letters[0]["Body"]
