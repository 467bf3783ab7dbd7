import base64
from datetime import datetime

import pytest

from rides.stream.events import (
    InvalidEvent,
    RideEvent,
    completion_from,
    completion_json,
    decode_data,
    parse_completion,
    parse_record_data,
    ride_event_json,
    validate_event,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_zoomcamp_event_is_valid():
    event = parse_record_data(
        b64(b'{"ride_id": 156, "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}}')
    )
    assert event == RideEvent(156, 130, 205, 3.66, None, None)
    assert event.partition_key == "156"


def test_optional_fields_and_unknown_fields():
    event = validate_event(
        {
            "ride_id": "abc",
            "ride": {
                "PULocationID": 1,
                "DOLocationID": 265,
                "trip_distance": 0,
                "lpep_pickup_datetime": "2021-01-01T08:30:00",
                "passenger_count": 2,
                "payment_type": 1,
                "VendorID": 2,
                "anything": [1, 2],
            },
            "extra": True,
        }
    )
    assert event.pickup_datetime == datetime(2021, 1, 1, 8, 30)
    assert event.passenger_count == 2 and event.payment_type == 1
    assert event.trip_distance == 0.0
    # an older producer's event: no payment type
    assert (
        validate_event({"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1}}).payment_type
        is None
    )


def test_integral_floats_from_pandas_producers_are_accepted():
    event = validate_event(
        {
            "ride_id": 1,
            "ride": {
                "PULocationID": 130.0,
                "DOLocationID": 205.0,
                "trip_distance": 1,
                "passenger_count": 1.0,
                "payment_type": 2.0,
            },
        }
    )
    assert (event.pu_location_id, event.do_location_id, event.passenger_count, event.payment_type) == (130, 205, 1, 2)


def test_timezone_aware_pickup_becomes_new_york_wall_clock():
    event = validate_event(
        {
            "ride_id": 1,
            "ride": {
                "PULocationID": 1,
                "DOLocationID": 2,
                "trip_distance": 1,
                "lpep_pickup_datetime": "2021-01-01T13:30:00Z",
            },
        }
    )
    assert event.pickup_datetime == datetime(2021, 1, 1, 8, 30)


@pytest.mark.parametrize(
    "data, reason",
    [
        ("!!!not base64!!!", "bad base64"),
        (b64(b"\xff\xfe\xfa"), "bad UTF-8"),
        (b64(b"{nope"), "bad JSON"),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": NaN}}'), "bad JSON"),
        (b64(b"[1, 2]"), "must be a JSON object"),
        (b64(b'{"ride": {}}'), "ride_id is required"),
        (b64(b'{"ride_id": "", "ride": {}}'), "must not be empty"),
        (b64(b'{"ride_id": true, "ride": {}}'), "ride_id must be a string or an integer"),
        (b64(b'{"ride_id": 1.5, "ride": {}}'), "ride_id must be a string or an integer"),
        (b64(b'{"ride_id": 1}'), "ride must be a JSON object"),
        (b64(b'{"ride_id": 1, "ride": {"DOLocationID": 2, "trip_distance": 1}}'), "PULocationID is required"),
        (
            b64(b'{"ride_id": 1, "ride": {"PULocationID": "130", "DOLocationID": 2, "trip_distance": 1}}'),
            "ride.PULocationID must be an integer zone id, got str",
        ),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 0, "DOLocationID": 2, "trip_distance": 1}}'), "1-265"),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 266, "trip_distance": 1}}'), "1-265"),
        (
            b64(b'{"ride_id": 1, "ride": {"PULocationID": 1.5, "DOLocationID": 2, "trip_distance": 1}}'),
            "integer zone id",
        ),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2}}'), "trip_distance is required"),
        (
            b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": "3"}}'),
            "ride.trip_distance must be a number, got str",
        ),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": -0.1}}'), ">= 0"),
        (b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1e999}}'), "infinity"),
        (
            b64(
                b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, '
                b'"lpep_pickup_datetime": "yesterday"}}'
            ),
            "ISO 8601",
        ),
        (
            b64(
                b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, '
                b'"passenger_count": -1}}'
            ),
            "passenger_count",
        ),
        *(
            (
                b64(
                    b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1, '
                    b'"payment_type": ' + code + b"}}"
                ),
                "payment_type must be a TLC payment code 1-6",
            )
            for code in (b"0", b"7", b"1.5", b"true", b'"card"')
        ),
    ],
)
def test_every_class_of_bad_input_has_a_reason(data, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_record_data(data)


def test_the_first_and_last_tlc_zones_are_rides_like_any_other():
    """Zones 1-265 (264 and 265 are TLC's "unknown" and "outside NYC", common in the data)."""
    for pickup, dropoff in ((1, 265), (265, 1), (1.0, 265.0), (265.0, 1.0)):  # floats: pandas producers
        event = validate_event(
            {"ride_id": 1, "ride": {"PULocationID": pickup, "DOLocationID": dropoff, "trip_distance": 1}}
        )
        assert (event.pu_location_id, event.do_location_id) == (pickup, dropoff)


@pytest.mark.parametrize("body", [[1, 2], "ride-completed", None, {"type": "ride-started"}, {"ride_id": 1}])
def test_anything_but_a_completion_object_is_refused_as_one(body):
    with pytest.raises(InvalidEvent, match='a completion is a JSON object with "type": "ride-completed"'):
        completion_from(body)


COMPLETED = {"type": "ride-completed", "ride_id": "r-1", "lpep_dropoff_datetime": "2024-03-01T10:00:00"}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"version": 2}, "ride-completed version 2 is not known [(]1[)]"),
        ({"version": "1"}, "ride-completed version '1' is not known [(]1[)]"),
        ({"ride_id": True}, "ride_id must be a non-empty string or an integer"),
        ({"ride_id": ""}, "ride_id must be a non-empty string or an integer"),
        ({"ride_id": 1.5}, "ride_id must be a non-empty string or an integer"),
        ({"ride_id": "r" * 257}, "ride_id must be at most 256 characters"),
        ({"lpep_dropoff_datetime": None}, "lpep_dropoff_datetime is required [(]ISO 8601[)]"),
        ({"lpep_dropoff_datetime": "soon"}, "^lpep_dropoff_datetime is not ISO 8601: 'soon'"),
        ({"duration_minutes": float("nan")}, "duration_minutes must be a finite number"),
        ({"fare_amount": "12"}, "fare_amount must be a finite number"),
        ({"tip_amount": True}, "tip_amount must be a finite number"),
        ({}, "a completion needs at least one of duration_minutes, fare_amount, tip_amount"),
    ],
)
def test_every_class_of_bad_completion_has_its_reason(change, reason):
    body = {**COMPLETED, "duration_minutes": 12.0, **change} if change else dict(COMPLETED)
    with pytest.raises(InvalidEvent, match=f"^{reason.lstrip('^')}$"):  # the whole reason
        completion_from({k: v for k, v in body.items() if v is not None})


def test_a_completion_is_version_1_unless_it_says_otherwise_and_carries_the_outcomes_it_has():
    for version in ({}, {"version": 1}):
        completed = completion_from({**COMPLETED, **version, "ride_id": 42, "fare_amount": 20, "tip_amount": None})
        assert completed.ride_id == "42" and completed.outcomes == {"fare_amount": 20.0}
        assert type(completed.outcomes["fare_amount"]) is float
    assert completion_from({**COMPLETED, "ride_id": "r" * 256, "tip_amount": 0}).outcomes == {"tip_amount": 0.0}


def test_decode_rejects_non_ascii_base64():
    with pytest.raises(InvalidEvent, match="bad base64"):
        decode_data("é")


@pytest.mark.parametrize("where", [4, -1])
def test_base64_with_a_character_outside_its_alphabet_is_refused_not_read_around(where):
    """Kinesis hands Lambda canonical base64; data with a stray character is not what a
    producer put, and a lenient decoder would skip the character and predict on it anyway."""
    good = b64(b'{"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1}}')
    assert decode_data(good)["ride_id"] == 1
    for stray in ("!", "\n", " "):
        with pytest.raises(InvalidEvent, match="bad base64"):
            decode_data(good[:where] + stray + good[where:])
    with pytest.raises(InvalidEvent, match="bad base64"):
        decode_data(good + "==")  # data after the padding


def test_a_completion_reads_back_from_its_record_data():
    data = b64(completion_json("r-7", datetime(2024, 3, 1, 9, 15), duration_minutes=12.5, tip_amount=2.0))
    assert __import__("orjson").loads(base64.b64decode(data)) == {  # the contract (docs/contracts.md)
        "type": "ride-completed",
        "version": 1,
        "ride_id": "r-7",
        "lpep_dropoff_datetime": "2024-03-01T09:15:00",
        "duration_minutes": 12.5,
        "tip_amount": 2.0,
    }
    completed = parse_completion(data)
    assert completed.ride_id == "r-7" and completed.dropoff_datetime == datetime(2024, 3, 1, 9, 15)
    assert completed.outcomes == {"ride_duration": 12.5, "tip_amount": 2.0}
    with pytest.raises(InvalidEvent, match="bad base64"):
        parse_completion(data[:5] + "!" + data[5:])


def test_round_trip_through_the_wire_format():
    event = RideEvent("r-1", 10, 20, 2.5, datetime(2023, 1, 5, 10, 0), 3)
    assert validate_event(__import__("orjson").loads(ride_event_json(event))) == event
    paid = event._replace(payment_type=1)
    assert validate_event(__import__("orjson").loads(ride_event_json(paid))) == paid


def test_non_finite_numbers_from_other_decoders_are_rejected():
    with pytest.raises(InvalidEvent, match="finite"):
        validate_event({"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": float("inf")}})
    with pytest.raises(InvalidEvent, match="finite"):
        validate_event({"ride_id": 1, "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": float("nan")}})


def test_json_bytes_is_compact_orjson_output():
    import orjson

    from rides.stream.events import json_bytes

    value = {"ride_id": 1, "ride": {"trip_distance": 1.5}, "s": "é"}
    assert json_bytes(value) == orjson.dumps(value)
    assert type(json_bytes(value)) is bytes
