"""The ride event contract: decoding Kinesis record data and validating rides.

Every failure raises `InvalidEvent` with a reason that ends up in the dead-letter message,
so a producer can tell exactly what was wrong with what it sent.
"""

from __future__ import annotations

import binascii
import math
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from rides.stream.model_specs import MODELS

MIN_ZONE, MAX_ZONE = 1, 265
# TLC's payment codes: how the rider pays is what tips depend on (cash tips are not recorded).
PAYMENT_TYPES = {1: "credit card", 2: "cash", 3: "no charge", 4: "dispute", 5: "unknown", 6: "voided trip"}


class InvalidEvent(ValueError):
    """A record that can never be processed: it belongs in the dead-letter queue."""


class RideEvent(NamedTuple):
    ride_id: str | int
    pu_location_id: int
    do_location_id: int
    trip_distance: float
    pickup_datetime: datetime | None
    passenger_count: int | None
    payment_type: int | None = None  # TLC code (PAYMENT_TYPES); optional: older producers do not send it

    @property
    def partition_key(self) -> str:
        return str(self.ride_id)


def decode_data(data: str | bytes) -> Any:
    """base64 → UTF-8 → JSON, each step with its own reason."""
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidEvent(f"bad base64: {exc}") from None
    return decode_json(raw)


def decode_json(raw: bytes) -> Any:
    """UTF-8 → JSON for data that is already raw bytes (the web service, the producer)."""
    try:
        return orjson.loads(raw)  # validates UTF-8 itself: no separate decode on the hot path
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"bad UTF-8: {exc}") from None
    raise InvalidEvent(f"bad JSON: {error}") from None


def _zone(ride: dict, field: str) -> int:
    """The slow path: `validate_event` checks the common case (an int in range) inline."""
    value = ride.get(field)
    if value is None:
        raise InvalidEvent(f"ride.{field} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"ride.{field} must be an integer zone id, got {type(value).__name__}")
    if isinstance(value, float):
        # pandas-based producers turn integer columns with gaps into floats; 130.0 is still 130.
        if not (math.isfinite(value) and value.is_integer()):
            raise InvalidEvent(f"ride.{field} must be an integer zone id, got {value!r}")
        value = int(value)
    if not MIN_ZONE <= value <= MAX_ZONE:
        raise InvalidEvent(f"ride.{field} must be a TLC zone id {MIN_ZONE}-{MAX_ZONE}, got {value}")
    return value


def _distance(ride: dict) -> float:
    """The slow path: `validate_event` checks the common case (a finite float >= 0) inline."""
    value = ride.get("trip_distance")
    if value is None:
        raise InvalidEvent("ride.trip_distance is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"ride.trip_distance must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidEvent(f"ride.trip_distance must be finite, got {value!r}")
    if value < 0:
        raise InvalidEvent(f"ride.trip_distance must be >= 0, got {value!r}")
    return value


def _timestamp(ride: dict, field: str = "lpep_pickup_datetime", where: str = "ride.") -> datetime | None:
    value = ride.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}{field} must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"{where}{field} is not ISO 8601: {value[:40]!r}") from None
    if moment.tzinfo is not None:
        # TLC times are New York wall-clock times; the model learned them that way.
        try:
            moment = moment.astimezone(_new_york()).replace(tzinfo=None)
        except (OverflowError, ValueError):  # 9999-12-31T23:59:59-12:00 is past year 9999 in New York
            raise InvalidEvent(f"{where}{field} is out of range: {value[:40]!r}") from None
    return moment


def _new_york():
    from zoneinfo import ZoneInfo

    return ZoneInfo("America/New_York")


def _passengers(ride: dict) -> int | None:
    value = ride.get("passenger_count")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"ride.passenger_count must be an integer >= 0, got {value!r}")
    return value


def _payment_type(ride: dict) -> int | None:
    value = ride.get("payment_type")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in PAYMENT_TYPES:
        raise InvalidEvent(f"ride.payment_type must be a TLC payment code 1-6, got {value!r}")
    return value


def validate_event(obj: Any) -> RideEvent:
    """Check one decoded event against the ride event contract (docs/contracts.md)."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(obj).__name__}")
    ride_id = obj.get("ride_id")
    if type(ride_id) is not int:
        if ride_id is None:
            raise InvalidEvent("ride_id is required")
        if not isinstance(ride_id, str) or isinstance(ride_id, bool):
            raise InvalidEvent(f"ride_id must be a string or an integer, got {type(ride_id).__name__}")
        if not ride_id.strip():
            raise InvalidEvent("ride_id must not be empty")
        if len(ride_id) > 256:
            # A Kinesis partition key is at most 256 characters.
            raise InvalidEvent("ride_id must be at most 256 characters")
    ride = obj.get("ride")
    if not isinstance(ride, dict):
        raise InvalidEvent("ride must be a JSON object")
    # The common cases inline: this runs for every record on the consumer's hot path.
    pu, do, distance = ride.get("PULocationID"), ride.get("DOLocationID"), ride.get("trip_distance")
    if type(pu) is not int or not MIN_ZONE <= pu <= MAX_ZONE:
        pu = _zone(ride, "PULocationID")
    if type(do) is not int or not MIN_ZONE <= do <= MAX_ZONE:
        do = _zone(ride, "DOLocationID")
    if type(distance) is not float or not 0 <= distance < math.inf:  # NaN fails both
        distance = _distance(ride)
    return RideEvent(ride_id, pu, do, distance, _timestamp(ride), _passengers(ride), _payment_type(ride))


def parse_record_data(data: str | bytes) -> RideEvent:
    """A ride event from base64 record data (as Lambda delivers it): decode and validate."""
    return validate_event(decode_data(data))


def read_ride(raw: bytes) -> RideEvent:
    """A ride event from its raw bytes: what the consumer does with each record's data once
    rides.stream.kinesis_batch has base64-decoded (and, if need be, deaggregated) it."""
    return validate_event(decode_json(raw))


def json_bytes(obj: Any) -> bytes:
    """Compact JSON as right-sized bytes.

    orjson's result keeps its ~4 KiB working buffer allocated: holding 10,000 of them costs
    ~40 MB; a right-sized copy costs ~3 MB, for ~0.1 µs a record.
    """
    return memoryview(orjson.dumps(obj)).tobytes()


def ride_event_json(event: RideEvent) -> bytes:
    """Serialise a ride back to the wire contract (the web service and producer use this)."""
    ride: dict[str, Any] = {
        "PULocationID": event.pu_location_id,
        "DOLocationID": event.do_location_id,
        "trip_distance": event.trip_distance,
    }
    if event.pickup_datetime is not None:
        ride["lpep_pickup_datetime"] = event.pickup_datetime.isoformat()
    if event.passenger_count is not None:
        ride["passenger_count"] = event.passenger_count
    if event.payment_type is not None:
        ride["payment_type"] = event.payment_type
    return json_bytes({"ride_id": event.ride_id, "ride": ride})


# -- the prediction record: the consumer builds it (rides.stream.consumer._predict, inline on its hot
# path), the decision service parses it here; tests/test_consumer_faults.py holds them together.
# DynamoDB stores numbers of magnitude 1e-130 to 1e126 (and 0): a prediction outside that range
# (a linear model fed trip_distance = 1e300) can never be stored, so it is a dead letter.
DYNAMODB_MIN_MAGNITUDE, DYNAMODB_MAX_MAGNITUDE = 1e-130, 1e126
MAX_NAME_LENGTH = 256


class PredictionIn(NamedTuple):
    ride_id: str
    model: str
    version: str
    field: str
    value: float
    source: dict
    role: str = "production"  # or "shadow": a challenger's prediction, which no decision uses


def parse_prediction(data: str | bytes) -> PredictionIn:
    """A prediction record from base64 record data, or InvalidEvent with the reason."""
    return prediction_from(decode_data(data))


def read_prediction(raw: bytes) -> PredictionIn:
    """A prediction record from its raw bytes (rides.stream.kinesis_batch decoded them)."""
    return prediction_from(decode_json(raw))


def prediction_from(body: Any) -> PredictionIn:
    """A decoded prediction record (`ride-predictions`), checked, or InvalidEvent with the reason."""
    if not isinstance(body, dict):
        raise InvalidEvent("prediction record must be a JSON object")
    model, prediction = body.get("model"), body.get("prediction")
    if not isinstance(model, str) or not model or len(model) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"model must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    if not isinstance(prediction, dict):
        raise InvalidEvent("prediction must be a JSON object")
    ride_id = prediction.get("ride_id")
    if isinstance(ride_id, bool) or not isinstance(ride_id, str | int) or ride_id == "":
        raise InvalidEvent("prediction.ride_id must be a non-empty string or an integer")
    if len(str(ride_id)) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"prediction.ride_id must be at most {MAX_NAME_LENGTH} characters")
    values = [(k, v) for k, v in prediction.items() if k != "ride_id"]
    if len(values) != 1:
        raise InvalidEvent(f"prediction must hold ride_id and exactly one value, got {sorted(prediction)}")
    field, value = values[0]
    if len(field) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"prediction field names are at most {MAX_NAME_LENGTH} characters")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent(f"prediction.{field} must be a finite number")
    if value != 0 and not DYNAMODB_MIN_MAGNITUDE <= abs(value) < DYNAMODB_MAX_MAGNITUDE:
        raise InvalidEvent(
            f"prediction.{field} = {value!r} is outside the range a decision can store (1e-130 to 1e126)"
        )
    source = body.get("source") if isinstance(body.get("source"), dict) else {}
    role = body.get("role", "production")
    if role not in ROLES:
        raise InvalidEvent(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return PredictionIn(str(ride_id), model, str(body.get("version", "")), field, float(value), source, role)


ROLES = ("production", "shadow")
COMPLETED = "ride-completed"
# What each prediction field is checked against when the ride completes.
OUTCOME_FIELDS = {model.prediction_field: model.outcome_field for model in MODELS}


class RideCompleted(NamedTuple):
    """Ground truth: what a ride turned out to be (docs/contracts.md, `ride-completions`)."""

    ride_id: str
    dropoff_datetime: datetime
    outcomes: dict  # prediction field → actual value (ride_duration, fare_amount, tip_amount)


def parse_completion(data: str | bytes) -> RideCompleted:
    """A `ride-completed` event from base64 record data, or InvalidEvent with the reason."""
    return completion_from(decode_data(data))


def completion_from(body: Any) -> RideCompleted:
    """A decoded `ride-completed` event, checked, or InvalidEvent with the reason."""
    if not isinstance(body, dict) or body.get("type") != COMPLETED:
        raise InvalidEvent(f'a completion is a JSON object with "type": "{COMPLETED}"')
    if body.get("version", 1) != 1:
        raise InvalidEvent(f"{COMPLETED} version {body.get('version')!r} is not known (1)")
    ride_id = body.get("ride_id")
    if isinstance(ride_id, bool) or not isinstance(ride_id, str | int) or ride_id == "":
        raise InvalidEvent("ride_id must be a non-empty string or an integer")
    if len(str(ride_id)) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"ride_id must be at most {MAX_NAME_LENGTH} characters")
    dropoff = _timestamp(body, "lpep_dropoff_datetime", "")
    if dropoff is None:
        raise InvalidEvent("lpep_dropoff_datetime is required (ISO 8601)")
    outcomes = {}
    for field, name in OUTCOME_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidEvent(f"{name} must be a finite number")
        outcomes[field] = float(value)
    if not outcomes:
        raise InvalidEvent(f"a completion needs at least one of {', '.join(OUTCOME_FIELDS.values())}")
    return RideCompleted(str(ride_id), dropoff, outcomes)


def completion_json(ride_id: str | int, dropoff: datetime, **outcomes: float) -> bytes:
    """The `ride-completed` event (version 1) a producer puts on `ride-completions`."""
    return json_bytes(
        {
            "type": COMPLETED,
            "version": 1,
            "ride_id": ride_id,
            "lpep_dropoff_datetime": dropoff.strftime("%Y-%m-%dT%H:%M:%S"),
            **{name: value for name, value in outcomes.items() if value is not None},
        }
    )
