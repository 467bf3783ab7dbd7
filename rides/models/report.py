"""Every consumer's model against its baseline on held-out months (`rides models report`): the
README's model table, produced by a command. Each model is trained as `rides train` trains it,
then scored on months it never saw: all rides, and for a model that reads the payment type,
the rides whose record says how they were paid, with the field and without it (an older
producer's events)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rides.readme_section import write_section
from rides.settings import CONSUMERS
from rides.stream.features import PAYMENT_TYPE, features_from_frame
from rides.stream.model_specs import MODELS

README_MARKERS = ("<!-- models:start -->\n", "<!-- models:end -->")
UNITS = {model.target: model.unit for model in MODELS}


@dataclass(frozen=True)
class Row:
    model: str
    month: str
    rides: str  # which rides: "all", "paid known"
    count: int
    baseline_rmse: float
    rmse: float  # ours, with every field the rides carry
    rmse_without_payment: float | None  # ours on the same rides without the payment type
    unit: str

    @property
    def gain(self) -> float:
        return self.rmse / self.baseline_rmse - 1


def model_rows(train_month: str, val_month: str, held_out: list[str]) -> list[Row]:
    from rides.data import read_trips
    from rides.models.training import BASELINE_KEYS, _with_plausible_target, onnx_predict, regression_metrics, train

    train_frame, val_frame = read_trips(train_month), read_trips(val_month)
    months = {month: read_trips(month) for month in held_out}
    rows = []
    for spec in CONSUMERS.values():
        trained = train(train_frame, val_frame, target=spec.target)
        reads_payment = PAYMENT_TYPE in trained.features
        for month, frame in months.items():
            frame = _with_plausible_target(frame, spec.target)
            subsets = {"all": frame}
            if reads_payment:
                subsets["paid known"] = frame[frame[PAYMENT_TYPE].notna()]
            for which, rides in subsets.items():
                actual = rides[spec.target].to_numpy(dtype=np.float64)
                features = features_from_frame(rides)
                matrix = features.matrix(trained.features)
                baseline = trained.baseline.predict(features.dicts(BASELINE_KEYS))
                without = None
                if reads_payment:
                    unpaid = matrix.copy()
                    unpaid[:, trained.features.index(PAYMENT_TYPE)] = np.nan
                    without = regression_metrics(actual, onnx_predict(trained.onnx_model, unpaid)).rmse
                rows.append(
                    Row(
                        spec.model_name,
                        month,
                        which,
                        len(rides),
                        regression_metrics(actual, baseline).rmse,
                        regression_metrics(actual, onnx_predict(trained.onnx_model, matrix)).rmse,
                        without,
                        UNITS.get(spec.target, ""),
                    )
                )
    return rows


def format_rows(rows: list[Row], train_month: str, val_month: str) -> str:
    lines = [
        f"Trained on {train_month} (validated on {val_month}) as `rides train` does, scored on held-out months "
        "(`rides models report --write-readme` writes this table):",
        "",
        "| model | held-out month | rides | baseline RMSE | ours RMSE | ours without the payment type |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        without = "–" if r.rmse_without_payment is None else f"{r.rmse_without_payment:.2f} {r.unit}"
        lines.append(
            f"| {r.model} | {r.month} | {r.rides} ({r.count:,}) | {r.baseline_rmse:.2f} {r.unit} | "
            f"{r.rmse:.2f} {r.unit} ({r.gain:+.0%}) | {without} |"
        )
    return "\n".join(lines) + "\n"


def write_readme(text: str, readme: Path) -> None:
    write_section(readme, README_MARKERS, text, required=True)
