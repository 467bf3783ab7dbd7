"""MLflow as the system of record: log a training run, register, alias, resolve, promote.

Tracking store: MLFLOW_TRACKING_URI (default: a SQLite file under the state directory, so
nothing else must run). Artifacts: the model bucket, s3://<bucket>/mlflow; boto3 reaches an
emulator through AWS_ENDPOINT_URL (or MLflow's own MLFLOW_S3_ENDPOINT_URL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rides import RidesError
from rides.settings import StackNames, state_dir
from rides.stream.features import QUICK_FEATURES

if TYPE_CHECKING:  # training pulls in pandas and scikit-learn; serving code imports this module
    from rides.models.training import TrainedModels


class RegistryError(RidesError):
    """The registry could not answer, or a model reference cannot be read."""


class ModelNotFound(RegistryError):
    """The registry answered: no such model, version or alias (not: the registry failed)."""


class PromotionError(RidesError):
    """A promotion that cannot happen; nothing was changed."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def _mlflow():
    import logging

    import mlflow

    # MLflow logs alembic migrations and the like at INFO; the CLI prints what matters.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # "declares CUDAExecutionProvider but it is unavailable": true of every ONNX model on a CPU
    logging.getLogger("mlflow.onnx").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def client():
    return _mlflow().MlflowClient()


def ensure_experiment(name: str, bucket: str) -> str:
    mlflow = _mlflow()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"s3://{bucket}/mlflow")


@dataclass
class Registered:
    name: str
    version: str
    uri: str  # the S3 artifact location: what MODEL_URI takes
    run_id: str
    alias: str
    quick: Registered | None = None  # the same run's quick model (`<name>-quick`), for the web service


def quick_model_name(model_name: str) -> str:
    """The registered name of a model's quick counterpart (the web service's instant answer)."""
    return f"{model_name}-quick"


def log_training(
    trained: TrainedModels,
    *,
    train_source: str,
    val_source: str,
    names: StackNames | None = None,
    model_name: str | None = None,
    target: str = "duration",
    alias: str = "staging",
) -> Registered:
    """Log params, metrics and the models; register ours as `model_name` and the quick one as
    `<model_name>-quick`, and point `alias` at both."""
    names = names or StackNames.from_env()
    model_name = model_name or names.registered_model
    mlflow = _mlflow()
    import onnxruntime
    import sklearn
    from mlflow import onnx as mlflow_onnx
    from mlflow import sklearn as mlflow_sklearn
    from mlflow.models import infer_signature

    experiment_id = ensure_experiment(
        names.experiment if model_name == names.registered_model else model_name, names.model_bucket
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{train_source}->{val_source}") as run:
        mlflow.log_params(
            {
                "train_source": train_source,
                "val_source": val_source,
                "target": target,
                "train_rows": trained.train_rows,
                "val_rows": trained.val_rows,
                **trained.params,
            }
        )
        mlflow.log_metrics(
            {
                "baseline_val_rmse": trained.baseline_metrics.rmse,
                "baseline_val_mae": trained.baseline_metrics.mae,
                "val_rmse": trained.metrics.rmse,
                "val_mae": trained.metrics.mae,
                "onnx_val_rmse": trained.onnx_metrics.rmse,
                "train_seconds": trained.seconds,
            }
        )
        example_dicts = [{"PU_DO": "130_205", "trip_distance": 3.66}]
        mlflow_sklearn.log_model(
            trained.baseline,
            name="baseline",
            signature=infer_signature(example_dicts, trained.baseline.predict(example_dicts)),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        )
        quick_example = trained.quick_example.astype("float32")
        quick_info = mlflow_onnx.log_model(
            trained.quick_onnx,
            name="quick",
            signature=infer_signature(quick_example, trained.quick_example_output.astype("float32")),
            input_example=quick_example,
            pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", "numpy"],
            metadata={"rides_features": list(QUICK_FEATURES), "target": target, "kind": "quick"},
            # one file: the loaders fetch model.onnx alone (the weight table would go beside it)
            save_as_external_data=False,
        )
        example = trained.example.astype("float32")
        info = mlflow_onnx.log_model(
            trained.onnx_model,
            name="model",
            signature=infer_signature(example, trained.model.predict(example).astype("float32")),
            input_example=example,
            pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", "numpy"],
            # The consumer builds the input matrix from these names, in this order.
            metadata={
                "rides_features": list(trained.features),
                "target": target,
                # what live evaluation compares each hour's inputs and predictions with
                "rides_drift_reference": trained.drift_reference,
            },
        )
        version = mlflow.register_model(info.model_uri, model_name)
        quick_version = mlflow.register_model(quick_info.model_uri, quick_model_name(model_name))
    mlflow_client = mlflow.MlflowClient()
    registered = []
    for name, registered_version in ((model_name, version), (quick_model_name(model_name), quick_version)):
        mlflow_client.set_registered_model_alias(name, alias, registered_version.version)
        uri = mlflow_client.get_model_version_download_uri(name, registered_version.version)
        registered.append(Registered(name, str(registered_version.version), uri, run.info.run_id, alias))
    main, quick = registered
    main.quick = quick
    return main


def parse_model_ref(ref: str) -> tuple[str, str]:
    """'name@alias' or 'name/3' (with or without 'models:/') → (name, alias or version)."""
    body = ref.removeprefix("models:/")
    name, _, rest = body.partition("@") if "@" in body else body.rpartition("/")
    if not name or not rest:
        raise RegistryError(f"a model reference looks like NAME@ALIAS or NAME/VERSION, got {ref!r}")
    return name, rest


def resolve(model_name: str, version_or_alias: str) -> Registered:
    """A version number or an alias → the registered version and its artifact location."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    try:
        if version_or_alias.isdigit():
            version = mlflow_client.get_model_version(model_name, version_or_alias)
        else:
            version = mlflow_client.get_model_version_by_alias(model_name, version_or_alias)
        uri = mlflow_client.get_model_version_download_uri(model_name, version.version)
    except MlflowException as exc:
        # What the registry answers for no such model or version, and for no such alias.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelNotFound(
                f"model {model_name!r} has no version or alias {version_or_alias!r}: {exc.message}"
            ) from None
        raise RegistryError(f"the registry failed to resolve {model_name}@{version_or_alias}: {exc.message}") from None
    return Registered(model_name, str(version.version), uri, version.run_id, version_or_alias)


def quick_of(model: Registered) -> Registered | None:
    """The quick model the same training run registered beside `model`, if any."""
    name = quick_model_name(model.name)
    versions = client().search_model_versions(f"name = '{name}' and run_id = '{model.run_id}'")
    if not versions:
        return None
    latest = max(versions, key=lambda v: int(v.version))
    uri = client().get_model_version_download_uri(name, latest.version)
    return Registered(name, str(latest.version), uri, latest.run_id, model.alias)


def set_alias(model: Registered, alias: str) -> None:
    client().set_registered_model_alias(model.name, alias, model.version)
