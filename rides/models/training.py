"""Train the ride-duration model on TLC months and record everything in MLflow.

Two models on the same months and the same feature function:
- the MLOps Zoomcamp baseline: DictVectorizer + LinearRegression on PU_DO and trip_distance.
  It is also the web service's quick model (`<name>-quick`): exported to ONNX as what it is,
  one weight per (pickup, drop-off) pair plus one per mile, so it is served by the same loader
  and onnxruntime, without scikit-learn in the web image;
- ours: gradient-boosted trees on the numeric features, exported to ONNX so the consumer
  serves it with onnxruntime (no scikit-learn or mlflow import on the hot path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rides.stream.evaluation import drift
from rides.stream.events import MAX_ZONE
from rides.stream.features import NUMERIC_FEATURES, PAYMENT_TYPE, QUICK_FEATURES, RideFeatures, features_from_frame
from rides.stream.model_specs import MODELS

BASELINE_KEYS = ("PU_DO", "trip_distance")
# Share of training rows whose optional fields are hidden, so the model learns what to do
# when an event carries no pickup time or passenger count.
MASK_OPTIONAL_SHARE = 0.15
OPTIONAL_FEATURES = ("pickup_hour", "pickup_dow", "passenger_count")
# What a target's model reads beyond NUMERIC_FEATURES. TLC records tips for card payments only
# (cash tips are $0 in the data), so how the rider pays is most of what predicts a tip; it did
# not pay for a second ensemble in duration (1% worse on 2021-03) or fare (1.5% better).
TARGET_FEATURES = {"tip_amount": (*NUMERIC_FEATURES, PAYMENT_TYPE)}
# Serving cost grows with the number of trees. Against learning rate 0.1 with 63 leaves
# (~200 trees), these stop at ~70-90 trees: 2.2x faster to score, RMSE +0.2-0.6%, MAE equal
# (docs/design-notes.md).
HGB_PARAMS = {"max_iter": 300, "learning_rate": 0.2, "max_leaf_nodes": 127, "random_state": 42}


@dataclass
class Metrics:
    rmse: float
    mae: float


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> Metrics:
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return Metrics(float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error))))


def features_for(target: str) -> tuple[str, ...]:
    return TARGET_FEATURES.get(target, NUMERIC_FEATURES)


class WithFallback:
    """Two models as one: `known`, trained on the rides whose payment type is known, where the
    ride says how it is paid; `fallback`, trained as before the field existed, where it does
    not. A producer that never sends the field gets exactly the model it had."""

    def __init__(self, known, fallback, column: int, floor: float):
        self.known, self.fallback, self.column, self.floor = known, fallback, column, floor

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        matrix = np.asarray(matrix)
        missing = np.isnan(matrix[:, self.column])
        out = np.empty(len(matrix), dtype=np.float64)
        if missing.any():
            out[missing] = self.fallback.predict(np.delete(matrix[missing], self.column, axis=1))
        if not missing.all():
            out[~missing] = np.maximum(self.known.predict(matrix[~missing]), self.floor)
        return out


@dataclass
class TrainedModels:
    baseline: object  # sklearn Pipeline(DictVectorizer, LinearRegression)
    model: object  # HistGradientBoostingRegressor
    onnx_model: object  # onnx.ModelProto
    baseline_metrics: Metrics
    quick_onnx: object  # onnx.ModelProto of the baseline, input QUICK_FEATURES
    metrics: Metrics
    onnx_metrics: Metrics
    train_rows: int
    val_rows: int
    seconds: float
    example: np.ndarray = field(repr=False, default=None)
    drift_reference: dict = field(repr=False, default_factory=dict)  # rides.stream.evaluation.drift
    quick_example: np.ndarray = field(repr=False, default=None)  # QUICK_FEATURES of the same rows
    quick_example_output: np.ndarray = field(repr=False, default=None)
    features: tuple[str, ...] = NUMERIC_FEATURES  # the ONNX model's input columns, in order
    metrics_without_payment: Metrics | None = None  # where it reads the payment type: rides without it

    @property
    def params(self) -> dict:
        """What to log as the run's parameters."""
        return {
            "features": ",".join(self.features),
            "baseline_features": ",".join(BASELINE_KEYS),
            **{f"hgb_{k}": v for k, v in HGB_PARAMS.items()},
        }


def _mask_optional(
    features: RideFeatures, rng: np.random.Generator, names: tuple[str, ...] = NUMERIC_FEATURES
) -> np.ndarray:
    matrix = features.matrix(names)
    hide = rng.random(len(matrix)) < MASK_OPTIONAL_SHARE
    for name in OPTIONAL_FEATURES:
        matrix[hide, names.index(name)] = np.nan
    return matrix


def to_onnx(model, n_features: int):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_features]))])


def fallback_onnx(known, fallback, column: int, n_features: int, floor: float):
    """WithFallback as one ONNX graph on the same input: `known` on every column where the
    given column is a number (no lower than `floor`: trees fit to cash rides' $0 tips answer a
    few cents below it, which the decision rules read as a negative tip share), `fallback` on
    the other columns where it is NaN (unchanged: the model as it was)."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    known, fallback = compose.add_prefix(known, "known_"), compose.add_prefix(fallback, "fallback_")
    others = np.array([i for i in range(n_features) if i != column], dtype=np.int64)
    nodes = [
        helper.make_node("Identity", ["features"], ["known_features"]),
        helper.make_node("Gather", ["features", "others"], ["fallback_features"], axis=1),
        helper.make_node("Gather", ["features", "column"], ["paid"], axis=1),
        helper.make_node("IsNaN", ["paid"], ["unpaid"]),
        *known.graph.node,
        *fallback.graph.node,
        helper.make_node("Max", ["known_variable", "floor"], ["known_floored"]),
        helper.make_node("Where", ["unpaid", "fallback_variable", "known_floored"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "with_fallback",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        initializer=[
            *known.graph.initializer,
            *fallback.graph.initializer,
            numpy_helper.from_array(others, "others"),
            numpy_helper.from_array(np.array([column], dtype=np.int64), "column"),
            numpy_helper.from_array(np.array(floor, dtype=np.float32), "floor"),
        ],
    )
    opsets: dict[str, int] = {}
    for entry in (*known.opset_import, *fallback.opset_import):
        opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = known.ir_version
    onnx.checker.check_model(model)
    return model


def quick_onnx(baseline):
    """The baseline pipeline as an ONNX graph over QUICK_FEATURES: a DictVectorizer one-hot of
    PU_DO times a linear model is a lookup of one weight per zone pair (0 for a pair not seen in
    training, as the DictVectorizer ignores it), plus a weight per mile, plus the intercept."""
    from onnx import TensorProto, helper, numpy_helper

    vectorizer, regression = baseline.steps[0][1], baseline.steps[-1][1]
    side = MAX_ZONE + 1
    pair_weights = np.zeros(side * side, dtype=np.float32)
    per_mile = 0.0
    for name, column in vectorizer.vocabulary_.items():
        weight = float(regression.coef_[column])
        if name == "trip_distance":
            per_mile = weight
        elif name.startswith("PU_DO="):
            pickup, dropoff = (int(zone) for zone in name.removeprefix("PU_DO=").split("_"))
            pair_weights[pickup * side + dropoff] = weight
    constants = {
        "pair_weights": pair_weights,
        "side": np.array(side, dtype=np.int64),
        "per_mile": np.array(per_mile, dtype=np.float32),
        "intercept": np.array(float(regression.intercept_), dtype=np.float32),
        "zero": np.array([0], dtype=np.int64),
        "one": np.array([1], dtype=np.int64),
        "two": np.array([2], dtype=np.int64),
        "three": np.array([3], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Slice", ["features", "zero", "one", "one"], ["pu_f"]),
        helper.make_node("Slice", ["features", "one", "two", "one"], ["do_f"]),
        helper.make_node("Slice", ["features", "two", "three", "one"], ["miles"]),
        helper.make_node("Cast", ["pu_f"], ["pu"], to=TensorProto.INT64),
        helper.make_node("Cast", ["do_f"], ["do"], to=TensorProto.INT64),
        helper.make_node("Mul", ["pu", "side"], ["row"]),
        helper.make_node("Add", ["row", "do"], ["pair"]),
        helper.make_node("Gather", ["pair_weights", "pair"], ["pair_weight"], axis=0),
        helper.make_node("Mul", ["miles", "per_mile"], ["distance_weight"]),
        helper.make_node("Add", ["pair_weight", "distance_weight"], ["partial"]),
        helper.make_node("Add", ["partial", "intercept"], ["duration"]),
    ]
    graph = helper.make_graph(
        nodes,
        "quick_linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(QUICK_FEATURES)])],
        [helper.make_tensor_value_info("duration", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    import onnx

    onnx.checker.check_model(model)
    return model


def onnx_predict(onnx_model, matrix: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: matrix.astype(np.float32)})[0].reshape(-1)


# Plausible values of each target; rows outside (refunds, data errors) are left out of training.
TARGET_RANGES = {model.target: model.target_range for model in MODELS}


def _with_plausible_target(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    low, high = TARGET_RANGES[target]
    return frame.loc[frame[target].between(low, high)].reset_index(drop=True)


def train(train_frame: pd.DataFrame, val_frame: pd.DataFrame, *, target: str = "duration") -> TrainedModels:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    train_frame, val_frame = _with_plausible_target(train_frame, target), _with_plausible_target(val_frame, target)
    train_features = features_from_frame(train_frame)
    val_features = features_from_frame(val_frame)
    y_train = train_frame[target].to_numpy(dtype=np.float64)
    y_val = val_frame[target].to_numpy(dtype=np.float64)

    baseline = make_pipeline(DictVectorizer(), LinearRegression())
    baseline.fit(train_features.dicts(BASELINE_KEYS), y_train)
    baseline_predictions = baseline.predict(val_features.dicts(BASELINE_KEYS))
    baseline_metrics = regression_metrics(y_val, baseline_predictions)
    quick = quick_onnx(baseline)
    # What the web service serves must be the baseline we evaluated.
    quick_gap = np.max(
        np.abs(onnx_predict(quick, val_features.matrix(QUICK_FEATURES)) - baseline_predictions), initial=0
    )
    if quick_gap > 1e-2:
        raise RuntimeError(f"the quick model's ONNX export disagrees with the baseline by up to {quick_gap:.4f}")

    features = features_for(target)
    model = HistGradientBoostingRegressor(**HGB_PARAMS)
    model.fit(_mask_optional(train_features, np.random.default_rng(42)), y_train)
    onnx_model = to_onnx(model, len(NUMERIC_FEATURES))
    metrics_without_payment = None
    if PAYMENT_TYPE in features:
        column = features.index(PAYMENT_TYPE)
        known_rows = ~np.isnan(train_features.columns[PAYMENT_TYPE])
        known = HistGradientBoostingRegressor(**HGB_PARAMS)
        known.fit(_mask_optional(train_features, np.random.default_rng(43), features)[known_rows], y_train[known_rows])
        floor = TARGET_RANGES[target][0]
        onnx_model = fallback_onnx(to_onnx(known, len(features)), onnx_model, column, len(features), floor)
        model = WithFallback(known, model, column, floor)
        unpaid = val_features.matrix(features)
        unpaid[:, column] = np.nan
        metrics_without_payment = regression_metrics(y_val, model.predict(unpaid))
    val_matrix = val_features.matrix(features)
    metrics = regression_metrics(y_val, model.predict(val_matrix))

    onnx_predictions = onnx_predict(onnx_model, val_matrix)
    onnx_metrics = regression_metrics(y_val, onnx_predictions)
    # The ONNX graph is what gets served: it must agree with the model we evaluated.
    gap = float(np.max(np.abs(onnx_predictions - model.predict(val_matrix)))) if len(val_matrix) else 0.0
    if gap > 1e-2:
        raise RuntimeError(f"ONNX export disagrees with the trained model by up to {gap:.4f} minutes")
    return TrainedModels(
        baseline,
        model,
        onnx_model,
        baseline_metrics,
        quick,
        metrics,
        onnx_metrics,
        len(train_frame),
        len(val_frame),
        time.perf_counter() - started,
        example=val_matrix[:5],
        # the training rows' feature distributions and the model's predictions on them
        drift_reference=drift.reference(
            {name: train_features.columns[name] for name in NUMERIC_FEATURES},
            model.predict(train_features.matrix(features)),
        ),
        quick_example=val_features.matrix(QUICK_FEATURES)[:5],
        quick_example_output=onnx_predict(quick, val_features.matrix(QUICK_FEATURES)[:5]),
        features=features,
        metrics_without_payment=metrics_without_payment,
    )
