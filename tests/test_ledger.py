"""The chaos run's ledger must catch every way a record can go missing or astray: constructed
cases, each with one fault planted."""

from __future__ import annotations

import base64

import orjson
import pytest

from rides.local.ledger import Observed, Pointer, build_ledger

MODELS = ("ride-duration", "ride-fare")
FUNCTIONS = {"ride-duration-consumer": "ride-duration", "ride-fare-consumer": "ride-fare"}
SHARD = "shardId-000000000000"


def data(obj) -> str:
    return base64.b64encode(obj if isinstance(obj, bytes) else orjson.dumps(obj)).decode()


def ride(n: int) -> dict:
    return {"ride_id": n, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0}}


def healthy() -> Observed:
    """Two rides and one malformed record, each where it belongs."""
    observed = Observed(
        inputs=[
            {"shard_id": SHARD, "sequence_number": "1", "data": data(ride(1))},
            {"shard_id": SHARD, "sequence_number": "2", "data": data(b"{junk")},
            {"shard_id": SHARD, "sequence_number": "3", "data": data(ride(2))},
        ]
    )
    for n, seq in ((1, "1"), (2, "3")):
        for model in MODELS:
            observed.predictions.append(
                {"model": model, "prediction": {"ride_id": n, "x": 1.0}, "source": {"sequence_number": seq}}
            )
            observed.prediction_at.append(("shardId-000000000001", len(observed.predictions)))
        observed.decisions.append({"ride_id": str(n), "decision_id": f"{n}:1"})
    observed.letters.append(
        {
            "error": "bad JSON: x",
            "source": {"shard_id": SHARD, "sequence_number": "2", "stream_arn": "arn:aws:kinesis:r:0:stream/in"},
        }
    )
    return observed


def ledger(observed):
    return build_ledger(observed, MODELS, FUNCTIONS, "in")


def test_a_healthy_run_is_complete():
    result = ledger(healthy())
    assert result.complete and (result.rides, result.malformed, result.decided, result.dead_lettered) == (2, 1, 2, 1)


def test_a_missing_prediction_is_lost_unless_a_failed_batch_points_at_it():
    observed = healthy()
    del observed.predictions[3], observed.prediction_at[3]  # ride 2's fare
    assert ledger(observed).lost == {"ride-fare": 1}
    observed.pointers.append(Pointer("ride-fare-consumer", SHARD, 3, 3))
    result = ledger(observed)
    assert result.accounted and not result.complete and result.in_failed_batches["ride-fare"] == 1


def test_a_missing_decision_is_lost_unless_its_predictions_wait_in_a_failed_batch():
    observed = healthy()
    del observed.decisions[1]
    assert ledger(observed).lost == {"decision": 1}
    observed.pointers.append(Pointer("ride-decision-service", "shardId-000000000001", 3, 4))
    assert ledger(observed).accounted


def test_two_decision_ids_for_one_ride_conflict_but_a_repeated_record_does_not():
    observed = healthy()
    observed.decisions.append({"ride_id": "1", "decision_id": "1:1"})
    assert ledger(observed).accounted and ledger(observed).repeated_decision_records == 1
    observed.decisions.append({"ride_id": "1", "decision_id": "1:2"})
    assert ledger(observed).conflicting_decisions == 1 and not ledger(observed).accounted


def test_a_duplicate_prediction_must_name_its_source_record():
    observed = healthy()
    observed.predictions.append(dict(observed.predictions[0]))
    observed.prediction_at.append(("shardId-000000000001", 99))
    assert ledger(observed).accounted and ledger(observed).duplicate_predictions["ride-duration"] == 1
    observed.predictions.append({**observed.predictions[0], "source": {"sequence_number": "77"}})
    observed.prediction_at.append(("shardId-000000000001", 100))
    assert ledger(observed).unidentifiable_duplicates == 1 and not ledger(observed).accounted


@pytest.mark.parametrize(
    "plant",
    [
        lambda o: o.letters.clear(),  # the malformed record is nowhere
        lambda o: o.letters.append({"error": "?", "source": {"shard_id": SHARD, "sequence_number": "1"}}),
        lambda o: o.predictions.append({"model": "ride-duration", "prediction": {"ride_id": 99}, "source": {}}),
        lambda o: o.decisions.append({"ride_id": "99", "decision_id": "99:1"}),
    ],
    ids=["malformed record not dead-lettered", "valid ride dead-lettered", "stray prediction", "stray decision"],
)
def test_records_nowhere_or_in_the_wrong_place_are_caught(plant):
    observed = healthy()
    if plant.__code__.co_names and "predictions" in plant.__code__.co_names:
        observed.prediction_at.append(("shardId-000000000001", 1000))
    plant(observed)
    assert not ledger(observed).accounted
