from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from rides.stream.events import RideEvent
from rides.stream.features import (
    NUMERIC_FEATURES,
    RideFeatures,
    build_features,
    features_from_events,
    features_from_frame,
)


def test_zoomcamp_dicts():
    features = features_from_events([RideEvent(1, 130, 205, 3.66, None, None)])
    assert features.dicts() == [
        {"PU_DO": "130_205", "PULocationID": "130", "DOLocationID": "205", "trip_distance": 3.66}
    ]
    assert features.dicts(("PU_DO", "trip_distance")) == [{"PU_DO": "130_205", "trip_distance": 3.66}]


def test_time_features_match_pandas():
    moments = pd.to_datetime(["2021-01-04 00:00:00", "2021-01-10 23:30:00", "2023-02-15 12:15:00"])
    features = build_features(np.array([1, 2, 3]), np.array([4, 5, 6]), np.array([1.0, 2.0, 3.0]), moments.to_numpy())
    assert features.columns["pickup_dow"].tolist() == list(moments.day_of_week.astype(float))
    assert np.allclose(features.columns["pickup_hour"], moments.hour + moments.minute / 60)


def test_missing_optional_fields_are_nan():
    features = features_from_events(
        [RideEvent(1, 1, 132, 10.0, None, None), RideEvent(2, 5, 5, 1.0, datetime(2021, 1, 1, 6), 2)]
    )
    matrix = features.matrix()
    assert matrix.shape == (2, len(NUMERIC_FEATURES))
    assert matrix.dtype == np.float32
    hour = NUMERIC_FEATURES.index("pickup_hour")
    assert np.isnan(matrix[0, hour]) and matrix[1, hour] == 6
    assert np.isnan(matrix[0, NUMERIC_FEATURES.index("passenger_count")])
    assert features.columns["airport"].tolist() == [1.0, 0.0]  # zone 132 is JFK
    assert features.columns["same_zone"].tolist() == [0.0, 1.0]
    assert features.columns["PU_borough"][0] == 2  # zone 1 is EWR


def test_events_and_frames_give_the_same_features():
    """Training (frames) and serving (events) go through the one feature function."""
    frame = pd.DataFrame(
        {
            "PULocationID": [130, 1],
            "DOLocationID": [205, 265],
            "trip_distance": [3.66, 0.5],
            "lpep_pickup_datetime": pd.to_datetime(["2021-01-01 08:30:00", "2021-03-05 17:45:10"]),
            "passenger_count": [1.0, np.nan],
        }
    )
    events = [
        RideEvent(1, 130, 205, 3.66, datetime(2021, 1, 1, 8, 30), 1),
        RideEvent(2, 1, 265, 0.5, datetime(2021, 3, 5, 17, 45, 10), None),
    ]
    np.testing.assert_array_equal(features_from_frame(frame).matrix(), features_from_events(events).matrix())


def test_empty_batch():
    assert len(features_from_events([])) == 0


def test_no_rides_give_no_dicts():
    assert features_from_events([]).dicts() == []
    assert features_from_events([]).dicts(("PU_DO",)) == []


def test_a_ride_with_no_column_of_its_own_is_an_error_not_a_dropped_ride():
    """Columns of unequal length (a RideFeatures built by hand) must not pair the first rides
    and silently leave the others out of a course model's dicts."""
    one, two = np.array([1.0]), np.array([1.0, 2.0])
    features = RideFeatures({"PULocationID": two, "DOLocationID": two, "trip_distance": one})
    with pytest.raises(ValueError, match="shorter"):
        features.dicts()


def test_a_frame_without_pickup_times_or_passengers_gives_nan_for_them():
    """Batch scoring's frames may lack the optional columns, as events may lack the fields."""
    frame = pd.DataFrame({"PULocationID": [130], "DOLocationID": [205], "trip_distance": [3.66]})
    matrix = features_from_frame(frame).matrix()
    for name in ("pickup_hour", "pickup_dow", "passenger_count"):
        assert np.isnan(matrix[0, NUMERIC_FEATURES.index(name)])
    np.testing.assert_array_equal(matrix, features_from_events([RideEvent(1, 130, 205, 3.66, None, None)]).matrix())


def test_airport_flag_for_every_pair_of_zones():
    import numpy as np

    from rides.stream.features import AIRPORT_ZONES, build_features

    pu = np.arange(1, 266).repeat(265)
    do = np.tile(np.arange(1, 266), 265)
    airport = build_features(pu, do, np.ones(len(pu))).columns["airport"]
    expected = [float(p in AIRPORT_ZONES or d in AIRPORT_ZONES) for p, d in zip(pu.tolist(), do.tolist(), strict=True)]
    assert airport.tolist() == expected
