"""The web service's contract: its limits, the documented request and response shapes (the
OpenAPI schema), errors in FastAPI's shape and the server-sent events' framing."""

from __future__ import annotations

import os
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rides.stream.events import MAX_ZONE, MIN_ZONE, json_bytes

MAX_BODY_BYTES = 1024 * 1024
MAX_RIDES_PER_REQUEST = 1000
# Longest wait a request may ask for: under the function's timeout on AWS (infra/modules/web_service).
MAX_WAIT_SECONDS = float(os.environ.get("RIDES_MAX_WAIT_SECONDS") or 25.0)  # lower it to test waits quickly
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


# -- the schema, for the OpenAPI docs; rides.stream.events.validate_event stays the one validator ------
class Ride(BaseModel):
    model_config = ConfigDict(extra="allow")
    PULocationID: int = Field(ge=MIN_ZONE, le=MAX_ZONE, description="TLC pickup zone id")
    DOLocationID: int = Field(ge=MIN_ZONE, le=MAX_ZONE, description="TLC drop-off zone id")
    trip_distance: float = Field(ge=0, description="miles")
    lpep_pickup_datetime: str | None = Field(None, description="ISO 8601, New York time if naive")
    passenger_count: int | None = Field(None, ge=0)
    payment_type: int | None = Field(
        None, ge=1, le=6, description="TLC code: 1 card, 2 cash, 3 no charge, 4 dispute, 5 unknown, 6 voided"
    )


class RideEventIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    ride_id: str | int
    ride: Ride
    stream: bool = Field(False, description="Also put the ride on ride-events for the streaming models")


class Streamed(BaseModel):
    queued: bool
    error: str | None = None


class PredictionOut(BaseModel):
    ride_id: str | int
    ride_duration: float = Field(description="minutes")
    model: str
    version: str
    stream: Streamed | None = None


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[FieldError]


class StreamStateOut(BaseModel):
    """What the stream made of a ride (the decisions table), or `pending` when nothing yet."""

    model_config = ConfigDict(extra="allow")
    ride_id: str
    status: str = Field(
        description="pending, collecting, decided (the decision is made and sent) "
        "or published (a timeout decision the sweep sent)"
    )
    predictions: dict[str, dict] = Field(description="model → field, value, version")
    decision: dict | None


# One server-sent event: its name, and its data (JSON text): `quick` and `enhanced` a prediction
# ({ride_id, ride_duration, model, version, after_ms}), `decision` the decision record, `timeout`
# {ride_id, waited_s, known}.
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["quick", "enhanced", "decision", "timeout"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def documented(*statuses: int, events: bool = False, ok: type | None = None) -> dict:
    """The OpenAPI `responses` of a route: every status it sends, with its body."""
    what = {
        200: "the answer",
        202: "the wait ran out: what is known so far",
        401: "no API key, or not a known one",
        403: "the API key lacks the scope this needs",
        404: "nothing stored for this ride yet, or no decisions table configured",
        413: f"more than {MAX_RIDES_PER_REQUEST} rides, or a body over {MAX_BODY_BYTES} bytes",
        422: "a ride or a parameter breaks the contract: `loc` names the field",
    }
    out: dict = {}
    for status in statuses:
        if status == 422:
            model = ValidationErrorOut
        elif status in (200, 202):
            model = ok
        else:
            model = ErrorOut
        entry: dict = {"description": what[status]}
        if model is not None:
            entry["model"] = model
        if status == 200 and events:
            entry["content"] = {"text/event-stream": {"schema": SSE_EVENT}}
        out[status] = entry
    return out


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def error_location(message: str) -> list[str]:
    """'ride.trip_distance must be …' → ['ride', 'trip_distance']: where the error is."""
    first = message.split(" ", 1)[0]
    return first.split(".") if first.startswith(("ride.", "ride_id")) else []


def error_body(status: int, loc: list, message: str, kind: str = "value_error") -> tuple[int, bytes]:
    return status, json_bytes({"detail": [{"loc": loc, "msg": message, "type": kind}]})


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"
