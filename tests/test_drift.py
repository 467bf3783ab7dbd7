"""Drift (rides.stream.evaluation.drift): the population stability index's arithmetic, the
training data's bins, and the hour's counts in DynamoDB that the drift alarm reads. The
evaluation consumer's part (which rides and predictions it counts, in which hour) is in
tests/test_evaluation.py."""

from __future__ import annotations

import math

import boto3
import numpy as np
import pytest

from rides.local.stack import evaluations_table_spec
from rides.stream.evaluation.drift import REFERENCE_KEY, DriftCounter, counts, edges_of, load_reference, psi, reference

HOUR = "2026-12-03T01"
# Two inner edges: three bins of values and one for a missing value.
SPEC = {"edges": [1.0, 2.0], "expected": [0.25, 0.25, 0.5, 0.0]}


def test_psi_sums_each_bins_share_difference_times_its_log_ratio():
    # found [3, 1] is shares [0.75, 0.25] against [0.5, 0.5]
    assert psi([0.5, 0.5], [3, 1]) == pytest.approx(0.25 * math.log(0.75 / 0.5) + (-0.25) * math.log(0.25 / 0.5))
    # an empty bin counts as a share of 1e-4, so the index stays finite
    assert psi([0.5, 0.5], [4, 0]) == pytest.approx(0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))


def test_psi_of_bins_that_do_not_match_the_reference_is_an_error_not_a_partial_index():
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1, 1, 1])


def test_the_edges_are_the_inner_deciles_of_the_finite_values():
    values = np.array([*range(1, 101), np.nan, np.inf, -np.inf], dtype=np.float64)
    deciles = np.quantile(np.arange(1, 101, dtype=np.float64), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert edges_of(values) == pytest.approx(deciles.tolist())
    assert edges_of(np.full(50, 3.0)) == [3.0]  # a constant feature: one edge, not nine equal ones
    assert edges_of(np.array([np.nan])) == []


def test_counts_puts_a_value_on_an_edge_in_the_bin_above_and_a_missing_value_last():
    assert counts([1.0, 2.0], [1.0, 2.0]) == [0, 1, 1, 0]
    # every bin is there even when the values fill only the first
    assert counts([0.5], [1.0, 2.0]) == [1, 0, 0, 0]
    # None (a ride without the field) is missing, as NaN and infinity are
    assert counts([1.5, None, np.nan, np.inf], [1.0]) == [0, 1, 3]


def test_the_reference_gives_a_missing_value_its_share():
    ref = reference({"passenger_count": [1.0, None, 3.0, 4.0]}, np.array([10.0, 20.0]))
    assert ref["passenger_count"]["expected"][-1] == 0.25
    assert sum(ref["passenger_count"]["expected"]) == pytest.approx(1.0)
    assert set(ref) == {"passenger_count", "prediction"}


@pytest.fixture
def counter(aws):
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(**evaluations_table_spec("ride-evaluations"))
    return DriftCounter(dynamodb, "ride-evaluations", {"trip_distance": SPEC, "fare_amount": SPEC})


def stored(counter, hour=HOUR) -> dict[str, dict]:
    items = counter.client.query(
        TableName="ride-evaluations",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"drift#{hour}"}},
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


def test_an_hours_counts_add_up_and_keep_the_first_expiry(counter):
    values = np.array([0.5, 1.5, 2.5, 2.5])
    first = counter.add(HOUR, {"trip_distance": values}, expires_at=1_000)
    assert first["trip_distance"] == pytest.approx(psi(SPEC["expected"], [1, 1, 2, 0]))
    counter.add(HOUR, {"trip_distance": values[:1]}, expires_at=9_000)
    item = stored(counter)["trip_distance"]
    assert [item[f"b{i}"]["N"] for i in range(4)] == ["2", "1", "2", "0"]
    assert item["expires_at"]["N"] == "1000"  # the hour expires as its first batch said


def test_a_name_without_a_reference_or_without_values_is_skipped_not_the_end_of_the_batch(counter):
    scores = counter.add(
        HOUR,
        {"retired_feature": np.array([1.0]), "fare_amount": np.array([]), "trip_distance": np.array([1.5])},
        expires_at=0,
    )
    assert list(scores) == ["trip_distance"]
    assert list(stored(counter)) == ["trip_distance"]  # no item of zeros for an empty column


def test_the_report_skips_an_item_it_has_no_reference_for_and_reads_a_missing_bin_as_zero(counter):
    for sk, bins in [("a_retired_feature", {"b0": "5"}), ("trip_distance", {"b0": "1", "b1": "1", "b2": "2"})]:
        item = {"pk": {"S": f"drift#{HOUR}"}, "sk": {"S": sk}, **{k: {"N": v} for k, v in bins.items()}}
        counter.client.put_item(TableName="ride-evaluations", Item=item)
    # the reference has a bin the stored counts lack (a model trained with more bins)
    assert counter.hours([HOUR, "2026-12-03T02"]) == {
        HOUR: {"trip_distance": (pytest.approx(psi(SPEC["expected"], [1, 1, 2, 0])), 4)}
    }


def test_the_reference_is_read_from_the_models_metadata():
    asked = []

    def reader(answer):
        return lambda uri: asked.append(uri) or answer

    assert load_reference("models:/ride-duration@production", reader({REFERENCE_KEY: {"x": SPEC}})) == {"x": SPEC}
    assert asked == ["models:/ride-duration@production"]
    assert load_reference("m", reader({"other": 1})) == {}
    assert load_reference("m", reader(None)) == {}
