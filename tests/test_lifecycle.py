"""Training and the MLflow registry: train → register → alias → resolve → the consumer loads it."""

import numpy as np
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from rides.data import Month, clean
from rides.models.promote import promote, read_local_model
from rides.models.registry import ModelNotFound, PromotionError, RegistryError, log_training, resolve
from rides.settings import StackNames
from rides.stream.model import ModelLoadError, get_model, load_model


def test_clean_handles_both_schema_eras():
    old_era = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(
                [
                    "2021-01-01 10:00:00",
                    "2021-01-01 11:00:00",
                    "2009-01-01 00:00:00",
                    "2021-01-02 00:00:00",
                    "2021-01-03 00:00:00",
                ]
            ),
            "lpep_dropoff_datetime": pd.to_datetime(
                [
                    "2021-01-01 10:20:00",
                    "2021-01-01 11:00:30",
                    "2009-01-01 00:10:00",
                    "2021-01-02 02:00:00",
                    "2021-01-03 00:05:00",
                ]
            ),
            "PULocationID": np.array([1, 2, 3, 4, 5], dtype="int64"),
            "DOLocationID": np.array([1, 2, 3, 4, 5], dtype="int64"),
            "passenger_count": [1.0, np.nan, 1.0, 2.0, np.nan],
            "trip_distance": [1.0, 0.1, 1.0, 20.0, 2.0],
        }
    )
    cleaned = clean(old_era, Month(2021, 1))
    # 30 s ride, 2009 stray row and 2 h ride are gone
    assert cleaned["duration"].tolist() == [20.0, 5.0]
    new_era = old_era.astype({"PULocationID": "int32", "DOLocationID": "int32"}).assign(
        passenger_count=pd.array([1, 1, 1, 2, 3], dtype="int64")
    )
    cleaned_new = clean(new_era, Month(2021, 1))
    assert cleaned_new.dtypes["PULocationID"] == "int64"
    assert cleaned_new.dtypes["passenger_count"] == "float64"


def test_our_model_beats_the_baseline_by_15_percent_on_full_real_months():
    from rides.data import read_trips
    from rides.models.training import train

    result = train(read_trips("2021-01"), read_trips("2021-02"))
    assert 7.7 < result.baseline_metrics.rmse < 7.8  # the course's number on these months
    assert result.metrics.rmse <= 0.85 * result.baseline_metrics.rmse
    assert abs(result.onnx_metrics.rmse - result.metrics.rmse) < 1e-3


@pytest.fixture
def registry(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = StackNames()
    aws["s3"].create_bucket(Bucket=names.model_bucket)
    return aws


def test_registry_round_trip(registry, trained):
    registered = log_training(trained, train_source="2021-01", val_source="2021-02")
    assert registered.version == "1"
    assert registered.uri.startswith("s3://rides-models-stg/mlflow/")
    assert resolve("ride-duration", "staging").uri == registered.uri
    model = load_model(registered.uri)
    assert model.flavor == "onnx"
    assert load_model("models:/ride-duration@staging").uri == "models:/ride-duration@staging"
    assert load_model(f"models:/ride-duration/{registered.version}").flavor == "onnx"
    with pytest.raises(ModelLoadError, match=r"cannot load model from models:/ride-duration@nope: .*nope"):
        load_model("models:/ride-duration@nope")

    promoted = promote("ride-duration", "staging", alias="production", target="local")
    assert promoted.version == "1"
    assert resolve("ride-duration", "production").version == "1"
    control = read_local_model("ride-duration")
    assert control["MODEL_URI"] == registered.uri and control["MODEL_VERSION"] == "1"

    import mlflow.pyfunc

    from rides.stream.features import NUMERIC_FEATURES

    pyfunc = mlflow.pyfunc.load_model("models:/ride-duration@production")
    frame = pd.DataFrame(trained.example, columns=list(NUMERIC_FEATURES))
    served = get_model(registered.uri)
    output = pyfunc.predict(frame)
    output = next(iter(output.values())) if isinstance(output, dict) else output
    assert np.allclose(np.asarray(output).reshape(-1), trained.model.predict(trained.example), atol=1e-3)
    assert served.version == registered.run_id  # without MODEL_VERSION the run id identifies it


def test_training_registers_the_quick_model_which_serves_the_baselines_answers(registry, trained, trips):
    from rides.models.serving import load_serving_model
    from rides.models.training import BASELINE_KEYS
    from rides.stream.features import features_from_frame

    registered = log_training(trained, train_source="2021-01", val_source="2021-02")
    quick = registered.quick
    assert (quick.name, quick.version, quick.alias) == ("ride-duration-quick", "1", "staging")
    assert quick.run_id == registered.run_id  # the same run: one training, two jobs
    served = load_serving_model("ride-duration-quick@staging")
    assert (served.name, served.version, served.flavor) == ("ride-duration-quick", "1", "onnx")
    features = features_from_frame(trips[1].head(2000))
    expected = trained.baseline.predict(features.dicts(BASELINE_KEYS))
    assert np.allclose(served.predict(features), expected, atol=1e-3)
    # zone pairs never seen in training get no pair weight, as in the DictVectorizer
    from rides.stream.features import build_features

    unseen = build_features(np.array([264]), np.array([1]), np.array([2.0]))
    assert np.allclose(served.predict(unseen), trained.baseline.predict(unseen.dicts(BASELINE_KEYS)), atol=1e-3)


def test_promoting_a_run_to_production_carries_its_quick_model(registry, trained):
    """`rides train && rides promote` is enough for `rides serve`: the web service's quick
    model of the same run follows the stream model's alias."""
    from rides.models.registry import ModelNotFound

    first = log_training(trained, train_source="2021-01", val_source="2021-02")
    second = log_training(trained, train_source="2021-01", val_source="2021-02")
    with pytest.raises(ModelNotFound):
        resolve("ride-duration-quick", "production")
    promoted = promote("ride-duration", first.version, alias="production", target="none")
    assert promoted.quick is not None and promoted.quick.version == first.quick.version
    assert resolve("ride-duration-quick", "production").run_id == first.run_id
    promote("ride-duration", second.version, alias="shadow", target="none", role="shadow")
    assert resolve("ride-duration-quick", "production").run_id == first.run_id  # a shadow is not served
    with pytest.raises(ModelNotFound):
        resolve("ride-duration-quick", "shadow")


def test_promoting_a_missing_version_changes_nothing(registry, trained):
    log_training(trained, train_source="a", val_source="b")
    with pytest.raises(ModelNotFound, match="no version or alias '9'"):
        promote("ride-duration", "9", target="local")
    assert read_local_model("ride-duration") is None
    with pytest.raises(ModelNotFound):
        resolve("ride-duration", "production")


def test_promoting_a_version_whose_artifacts_are_gone_changes_nothing(registry, trained):
    registered = log_training(trained, train_source="a", val_source="b")
    bucket, prefix = registered.uri.removeprefix("s3://").split("/", 1)
    for item in registry["s3"].list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        registry["s3"].delete_object(Bucket=bucket, Key=item["Key"])
    with pytest.raises(PromotionError, match="artifacts are missing"):
        promote("ride-duration", registered.version, target="local")
    assert read_local_model("ride-duration") is None
    with pytest.raises(ModelNotFound):
        resolve("ride-duration", "production")


def test_model_errors_name_the_uri(aws):
    from rides.stream.model import ModelLoadError

    aws["s3"].create_bucket(Bucket="bkt-models")
    with pytest.raises(
        ModelLoadError, match=r"cannot load model from s3://bkt-models/x: s3://bkt-models/x/MLmodel does not exist"
    ):
        load_model("s3://bkt-models/x")
    aws["s3"].put_object(Bucket="bkt-models", Key="y/MLmodel", Body=b"flavors:\n  keras: {}\n")
    with pytest.raises(ModelLoadError, match="no supported flavor"):
        load_model("s3://bkt-models/y")
    with pytest.raises(ModelLoadError, match="cannot load model from s3://no-such-bucket-here/m"):
        load_model("s3://no-such-bucket-here/m")
    with pytest.raises(ModelLoadError, match="MODEL_URI is not set"):
        load_model("")


def test_promote_to_lambda_updates_the_function_environment_and_keeps_the_rest(registry, trained):
    import boto3

    from tests.helpers import zip_function

    registered = log_training(trained, train_source="a", val_source="b")
    lam = boto3.client("lambda")
    zip_function(
        lam,
        "ride-duration-consumer",
        environment={"PREDICTIONS_STREAM_NAME": "ride-predictions", "MODEL_URI": "s3://old/model"},
        publish=True,
    )
    # As Terraform leaves it: the `live` alias on version 1, the mapping calling the alias.
    alias_arn = lam.create_alias(FunctionName="ride-duration-consumer", Name="live", FunctionVersion="1")["AliasArn"]
    kinesis = boto3.client("kinesis")
    kinesis.create_stream(StreamName="ride-events", ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName="ride-events")["StreamDescriptionSummary"]["StreamARN"]
    lam.create_event_source_mapping(
        EventSourceArn=stream_arn, FunctionName=alias_arn, StartingPosition="TRIM_HORIZON", Enabled=False
    )

    promote("ride-duration", registered.version, target="lambda", function_name="ride-duration-consumer")

    live = lam.get_alias(FunctionName="ride-duration-consumer", Name="live")["FunctionVersion"]
    assert live != "1"
    served = lam.get_function_configuration(FunctionName="ride-duration-consumer", Qualifier="live")
    assert served["Environment"]["Variables"] == {
        "PREDICTIONS_STREAM_NAME": "ride-predictions",
        "MODEL_URI": registered.uri,
        "MODEL_VERSION": registered.version,
    }
    before = lam.get_function_configuration(FunctionName="ride-duration-consumer", Qualifier="1")
    assert before["Environment"]["Variables"]["MODEL_URI"] == "s3://old/model"  # versions are immutable
    [mapping] = lam.list_event_source_mappings(FunctionName=alias_arn)["EventSourceMappings"]
    assert mapping["State"] in ("Enabled", "Enabling")
    assert resolve("ride-duration", "production").version == registered.version


def test_failed_rollout_leaves_the_alias_where_it_was(registry, trained):
    registered = log_training(trained, train_source="a", val_source="b")
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        promote("ride-duration", registered.version, target="lambda", function_name="no-such-function")
    with pytest.raises(ModelNotFound):
        resolve("ride-duration", "production")


def test_model_references():
    from rides.models.registry import parse_model_ref

    assert parse_model_ref("ride-duration@production") == ("ride-duration", "production")
    assert parse_model_ref("models:/ride-fare/3") == ("ride-fare", "3")
    with pytest.raises(RegistryError, match="NAME@ALIAS or NAME/VERSION"):
        parse_model_ref("ride-duration")


def test_resolve_tells_a_missing_alias_from_a_registry_that_cannot_be_reached(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rides.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    missing = CliRunner().invoke(main, ["resolve", "--missing-ok", "ride-duration@staging"])
    assert missing.exit_code == 0 and missing.output.strip() == "{}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = CliRunner().invoke(main, ["resolve", "--missing-ok", "ride-duration@staging"])
    assert down.exit_code == 1 and "the registry failed to resolve" in down.output
