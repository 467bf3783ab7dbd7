"""The one feature function, shared by training, the consumer, the web service and batch scoring.

Features use only what a producer knows when the ride is requested: zones, distance, and the
pickup time and passenger count when the event carries them (missing → NaN, which the
project's gradient-boosted model handles natively).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np

from rides.stream.events import MAX_ZONE, RideEvent

ZONE_LOOKUP_CSV = Path(__file__).with_name("taxi_zone_lookup.csv")
# Fixed codes so that a model trained today means the same thing tomorrow.
BOROUGH_CODES = {
    "Bronx": 0,
    "Brooklyn": 1,
    "EWR": 2,
    "Manhattan": 3,
    "Queens": 4,
    "Staten Island": 5,
}
UNKNOWN_BOROUGH = 6
AIRPORT_ZONES = (1, 132, 138)  # Newark, JFK, LaGuardia

# Column order of the numeric matrix; stored in the model's metadata at training time.
NUMERIC_FEATURES = (
    "trip_distance",
    "PULocationID",
    "DOLocationID",
    "pickup_hour",
    "pickup_dow",
    "PU_borough",
    "DO_borough",
    "same_zone",
    "airport",
    "passenger_count",
)
# Optional columns a model may add to NUMERIC_FEATURES (the tip model: rides.models.training.TARGET_FEATURES).
PAYMENT_TYPE = "payment_type"
# The quick model's input (rides.models.training.quick_onnx): the course's zones and distance.
QUICK_FEATURES = ("PULocationID", "DOLocationID", "trip_distance")


@cache
def borough_by_zone() -> np.ndarray:
    """Array indexed by zone id (0..265) giving the borough code."""
    table = np.full(MAX_ZONE + 1, UNKNOWN_BOROUGH, dtype=np.float32)
    with ZONE_LOOKUP_CSV.open(newline="") as handle:
        for row in csv.DictReader(handle):
            zone = int(row["LocationID"])
            if 0 < zone <= MAX_ZONE:
                table[zone] = BOROUGH_CODES.get(row["Borough"], UNKNOWN_BOROUGH)
    return table


@cache
def airport_by_zone() -> np.ndarray:
    """Array indexed by zone id (0..265): 1.0 for an airport zone. Indexing costs ~1 µs where
    np.isin costs ~10, which is most of the features of a single-ride web request."""
    table = np.zeros(MAX_ZONE + 1, dtype=np.float64)
    table[list(AIRPORT_ZONES)] = 1.0
    return table


@dataclass(frozen=True)
class RideFeatures:
    """Columnar features for a batch of rides; one row per ride."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["trip_distance"])

    def matrix(self, names: Sequence[str] = NUMERIC_FEATURES) -> np.ndarray:
        """float32 matrix with the columns a numeric (ONNX) model was trained on."""
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise KeyError(f"model expects features this version does not build: {unknown}")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, which trees handle
            return np.column_stack([self.columns[name] for name in names]).astype(np.float32)

    def dicts(self, keys: Sequence[str] = ("PU_DO", "PULocationID", "DOLocationID", "trip_distance")) -> list[dict]:
        """Feature dicts in the MLOps Zoomcamp shape, for DictVectorizer pipelines.

        A DictVectorizer ignores keys it did not see in training, so course models that
        use `PU_DO` + `trip_distance` (or the zones as strings) work unchanged.
        """
        pu = self.columns["PULocationID"].astype(np.int64).tolist()
        do = self.columns["DOLocationID"].astype(np.int64).tolist()
        dist = self.columns["trip_distance"].tolist()
        rows = [
            {"PU_DO": f"{p}_{d}", "PULocationID": str(p), "DOLocationID": str(d), "trip_distance": t}
            for p, d, t in zip(pu, do, dist, strict=True)
        ]
        if set(keys) != set(rows[0] if rows else keys):
            rows = [{key: row[key] for key in keys} for row in rows]
        return rows


def build_features(
    pu_location_id: np.ndarray,
    do_location_id: np.ndarray,
    trip_distance: np.ndarray,
    pickup_datetime: np.ndarray | None = None,
    passenger_count: np.ndarray | None = None,
    payment_type: np.ndarray | None = None,
) -> RideFeatures:
    """The feature function. Arrays are aligned, one element per ride.

    `pickup_datetime` is datetime64 (NaT where unknown); `passenger_count` and `payment_type`
    float (NaN where unknown).
    """
    pu = np.asarray(pu_location_id, dtype=np.int64)
    do = np.asarray(do_location_id, dtype=np.int64)
    n = len(pu)
    boroughs, airports = borough_by_zone(), airport_by_zone()
    if pickup_datetime is None:
        hour = np.full(n, np.nan)
        dow = np.full(n, np.nan)
    else:
        moments = np.asarray(pickup_datetime, dtype="datetime64[s]")
        missing = np.isnat(moments)
        days = moments.astype("datetime64[D]")
        hour = (moments - days).astype(np.int64) / 3600.0
        dow = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        hour = np.where(missing, np.nan, hour)
        dow = np.where(missing, np.nan, dow.astype(np.float64))
    passengers = np.full(n, np.nan) if passenger_count is None else np.asarray(passenger_count, dtype=np.float64)
    payment = np.full(n, np.nan) if payment_type is None else np.asarray(payment_type, dtype=np.float64)
    return RideFeatures(
        {
            "trip_distance": np.asarray(trip_distance, dtype=np.float64),
            "PULocationID": pu.astype(np.float64),
            "DOLocationID": do.astype(np.float64),
            "pickup_hour": hour,
            "pickup_dow": dow,
            "PU_borough": boroughs[pu],
            "DO_borough": boroughs[do],
            "same_zone": (pu == do).astype(np.float64),
            "airport": np.maximum(airports[pu], airports[do]),
            "passenger_count": passengers,
            PAYMENT_TYPE: payment,
        }
    )


def features_from_events(events: Sequence[RideEvent]) -> RideFeatures:
    """Features for validated ride events (consumer, web service)."""
    if not events:
        return build_features(np.empty(0), np.empty(0), np.empty(0))
    pu, do, dist, pickup, passengers, payment = zip(
        *(
            (e.pu_location_id, e.do_location_id, e.trip_distance, e.pickup_datetime, e.passenger_count, e.payment_type)
            for e in events
        ),
        strict=True,
    )
    n = len(events)
    # Seconds since the epoch by timedelta arithmetic: numpy converts datetime objects ~6x slower.
    pickup_seconds = np.fromiter(
        (_NAT if moment is None else (moment - _EPOCH) // _SECOND for moment in pickup), dtype=np.int64, count=n
    )
    return build_features(
        np.fromiter(pu, dtype=np.int64, count=n),
        np.fromiter(do, dtype=np.int64, count=n),
        np.fromiter(dist, dtype=np.float64, count=n),
        pickup_seconds.view("datetime64[s]"),
        np.fromiter((np.nan if p is None else p for p in passengers), dtype=np.float64, count=n),
        np.fromiter((np.nan if p is None else p for p in payment), dtype=np.float64, count=n),
    )


_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_NAT = np.iinfo(np.int64).min  # numpy's NaT as an int64


def features_from_frame(frame) -> RideFeatures:
    """Features for a TLC trip DataFrame (training, batch scoring)."""
    pickup = (
        frame["lpep_pickup_datetime"].to_numpy(dtype="datetime64[s]") if ("lpep_pickup_datetime" in frame) else None
    )
    passengers, payment = (
        frame[column].to_numpy(dtype=np.float64, na_value=np.nan) if column in frame else None
        for column in ("passenger_count", PAYMENT_TYPE)
    )
    return build_features(
        frame["PULocationID"].to_numpy(dtype=np.int64),
        frame["DOLocationID"].to_numpy(dtype=np.int64),
        frame["trip_distance"].to_numpy(dtype=np.float64),
        pickup,
        passengers,
        payment,
    )
