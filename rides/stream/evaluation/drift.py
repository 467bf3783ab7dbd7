"""Drift: each input feature's and the predictions' distribution per hour against the training
data's, as a population stability index (PSI).

Training stores the reference in the model's MLmodel metadata (`rides_drift_reference`): per
feature, inner bin edges at the deciles of the training rows, and the share of rows in each bin
(plus a bin for a missing value). At run time the evaluation consumer counts the hour's rides in
the same bins (DynamoDB ADD, one update per feature per batch) and computes the PSI of the
counts so far: sum over bins of (actual - expected) * ln(actual / expected). Rules of thumb:
< 0.1 stable, 0.1-0.25 moving, > 0.25 shifted (the alarm's default threshold).

Counts are statistics, not records: a retried batch adds its rides again, which moves a PSI by
a hair and loses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

REFERENCE_KEY = "rides_drift_reference"
BINS = 10
EPSILON = 1e-4  # a bin empty on one side must not make the index infinite
PREDICTION = "prediction"


def edges_of(values: np.ndarray, bins: int = BINS) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({float(edge) for edge in inner})


def counts(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    """How many values fall in each bin: len(edges) + 1 bins, then one for NaN."""
    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="right")
    found = np.bincount(index, minlength=len(edges) + 1).tolist()
    return [*found, int(missing.sum())]


def reference(columns: Mapping[str, np.ndarray], predictions: np.ndarray) -> dict:
    """The training data's bins and shares, per feature and for the predictions."""
    out = {}
    for name, values in [*columns.items(), (PREDICTION, predictions)]:
        values = np.asarray(values, dtype=np.float64)
        edges = edges_of(values)
        found = counts(values, edges)
        total = sum(found) or 1
        out[name] = {"edges": edges, "expected": [n / total for n in found]}
    return out


def psi(expected: Sequence[float], found: Sequence[float]) -> float:
    total = sum(found)
    if not total:
        return math.nan
    index = 0.0
    for e, n in zip(expected, found, strict=True):
        a = max(n / total, EPSILON)
        e = max(e, EPSILON)
        index += (a - e) * math.log(a / e)
    return index


class DriftCounter:
    """The hour's counts in DynamoDB (item `pk = drift#<hour>`, `sk = <feature>`, one number
    attribute per bin, added to atomically)."""

    def __init__(self, client, table_name: str, reference: Mapping[str, dict]):
        self.client = client
        self.table_name = table_name
        self.reference = reference

    def add(self, hour: str, values: Mapping[str, np.ndarray], *, expires_at: int) -> dict[str, float]:
        """Add a batch's values to the hour; → the PSI of each name (feature or `prediction`) so far."""
        scores = {}
        for name, array in values.items():
            spec = self.reference.get(name)
            if spec is None or not len(array):
                continue
            found = counts(array, spec["edges"])
            names = {f"#b{i}": f"b{i}" for i in range(len(found))}
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"drift#{hour}"}, "sk": {"S": name}},
                UpdateExpression="ADD "
                + ", ".join(f"#b{i} :n{i}" for i in range(len(found)))
                + " SET expires_at = if_not_exists(expires_at, :ttl)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    **{f":n{i}": {"N": str(n)} for i, n in enumerate(found)},
                    ":ttl": {"N": str(expires_at)},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
            totals = [float(response[f"b{i}"]["N"]) for i in range(len(found))]
            scores[name] = psi(spec["expected"], totals)
        return scores

    def hours(self, hour_list: Sequence[str]) -> dict[str, dict[str, tuple[float, int]]]:
        """hour → name → (PSI, rides counted), for a report."""
        out: dict[str, dict[str, tuple[float, int]]] = {}
        for hour in hour_list:
            page = self.client.query(
                TableName=self.table_name,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"drift#{hour}"}},
            )
            for item in page.get("Items", []):
                name = item["sk"]["S"]
                spec = self.reference.get(name)
                if spec is None:
                    continue
                found = [float(item.get(f"b{i}", {"N": "0"})["N"]) for i in range(len(spec["expected"]))]
                out.setdefault(hour, {})[name] = (psi(spec["expected"], found), int(sum(found)))
        return out


def load_reference(model_uri: str, metadata_reader: Callable[[str], dict]) -> dict:
    """The reference stored with a model (empty when the model has none: no drift figures)."""
    return (metadata_reader(model_uri) or {}).get(REFERENCE_KEY) or {}
