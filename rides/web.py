"""`rides serve`: the same model over HTTP, with an opt-in "send it to the stream" mode.

- POST /predict: one ride event (the stream's contract) or a list of them → the duration now.
  With `"stream": true` (the rider's consent) the ride also goes onto `ride-events`, so the
  streaming consumers produce their richer predictions; the quick answer never waits on or
  fails with that put, and the response says whether it was queued.
- GET /predictions/{ride_id}: what the decision service stored for that ride, 404 until then.
- GET /health: model loaded, name and version.
Same loader, feature function and publisher as the consumer; OpenAPI docs at /docs.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from rides.stream.decision import DecisionStore
from rides.stream.events import MAX_ZONE, MIN_ZONE, InvalidEvent, RideEvent, json_bytes, ride_event_json, validate_event
from rides.stream.features import features_from_events
from rides.stream.model import LoadedModel
from rides.stream.publish import KinesisPublisher

MAX_BODY_BYTES = 1024 * 1024
MAX_RIDES_PER_REQUEST = 1000


# -- the schema, for the OpenAPI docs; rides.stream.events.validate_event stays the one validator ------
class Ride(BaseModel):
    model_config = ConfigDict(extra="allow")
    PULocationID: int = Field(ge=MIN_ZONE, le=MAX_ZONE, description="TLC pickup zone id")
    DOLocationID: int = Field(ge=MIN_ZONE, le=MAX_ZONE, description="TLC drop-off zone id")
    trip_distance: float = Field(ge=0, description="miles")
    lpep_pickup_datetime: str | None = Field(None, description="ISO 8601, New York time if naive")
    passenger_count: int | None = Field(None, ge=0)


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


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def _field(message: str) -> list[str]:
    """'ride.trip_distance must be …' → ['ride', 'trip_distance']: where the error is."""
    first = message.split(" ", 1)[0]
    return first.split(".") if first.startswith(("ride.", "ride_id")) else []


def _error(status: int, loc: list, message: str, kind: str = "value_error") -> tuple[int, bytes]:
    return status, json_bytes({"detail": [{"loc": loc, "msg": message, "type": kind}]})


class RideService:
    """The request-independent parts: model, stream publisher, predictions table."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        kinesis=None,
        input_stream: str | None = None,
        decisions: DecisionStore | None = None,
    ):
        self.model = model
        self.publisher = KinesisPublisher(kinesis, input_stream, concurrency=1) if kinesis and input_stream else None
        self.decisions = decisions

    async def answer(self, body: bytes) -> tuple[int, bytes]:
        """POST /predict: request body → (status, JSON body). Errors in FastAPI's shape."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(422, ["body"], f"bad JSON: {exc}", "json_invalid")
        single = isinstance(payload, dict)
        items = [payload] if single else payload
        if not isinstance(items, list) or not items:
            return _error(422, ["body"], "a ride event or a non-empty list of them")
        if len(items) > MAX_RIDES_PER_REQUEST:
            return 413, json_bytes({"detail": f"at most {MAX_RIDES_PER_REQUEST} rides per request"})
        events = []
        for index, item in enumerate(items):
            where = ["body"] if single else ["body", index]
            try:
                events.append(validate_event(item))
            except InvalidEvent as exc:
                return _error(422, where + _field(str(exc)), str(exc))
            if not isinstance(item.get("stream", False), bool):
                return _error(422, [*where, "stream"], "stream must be true or false")
        durations = self.predict(events)
        wanted = [i for i, item in enumerate(items) if item.get("stream") is True]
        streamed: dict[int, Streamed] = {}
        if wanted:
            # boto3 blocks: keep the event loop free for other requests meanwhile.
            outcome = await asyncio.to_thread(self.queue, [events[i] for i in wanted])
            streamed = dict(zip(wanted, outcome, strict=True))
        model = self.model
        out = []
        for i, (event, duration) in enumerate(zip(events, durations, strict=True)):
            answer = {
                "ride_id": event.ride_id,
                "ride_duration": duration,
                "model": model.name,
                "version": model.version,
            }
            if i in streamed:
                answer["stream"] = streamed[i].model_dump(exclude_none=True)
            out.append(answer)
        return 200, json_bytes(out[0] if single else out)

    def predict(self, events: list[RideEvent]) -> list[float]:
        return self.model.predict(features_from_events(events)).tolist()

    def queue(self, events: list[RideEvent]) -> list[Streamed]:
        if self.publisher is None:
            return [Streamed(queued=False, error="streaming is not configured")] * len(events)
        try:
            result = self.publisher.publish([(e.partition_key, ride_event_json(e)) for e in events])
        except Exception as exc:
            return [Streamed(queued=False, error=type(exc).__name__)] * len(events)
        failed = set(result.failed)
        error = ",".join(sorted(result.errors)) or "not queued"
        return [
            Streamed(queued=False, error=error) if i in failed else Streamed(queued=True) for i in range(len(events))
        ]


def create_app(service: RideService):
    """The ASGI app: FastAPI (docs, health, predictions) behind the /predict fast path."""
    return PredictFastPath(_fastapi_app(service), service)


def _fastapi_app(service: RideService) -> FastAPI:
    app = FastAPI(
        title="rides",
        version="1",
        default_response_class=ORJSONResponse,
        description="Ride duration predictions: instant over HTTP, richer over the stream.",
    )

    @app.get("/health")
    def health() -> dict:
        model = service.model
        return {"status": "ok", "model": model.name, "version": model.version, "flavor": model.flavor}

    @app.post(
        "/predict",
        response_model=PredictionOut | list[PredictionOut],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/RideEventIn"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/RideEventIn"},
                                    "maxItems": MAX_RIDES_PER_REQUEST,
                                },
                            ]
                        }
                    }
                },
            }
        },
    )
    async def predict(request: Request):
        # Normally answered by PredictFastPath before routing; kept for the docs and any
        # deployment that mounts the app without it.
        status, content = await service.answer(await _read_body(request))
        return Response(content, status_code=status, media_type="application/json")

    @app.get("/predictions/{ride_id}")
    def streamed_predictions(ride_id: str):
        if service.decisions is None:
            raise HTTPException(404, detail="no decisions table configured")
        state = service.decisions.get(ride_id)
        if state is None:
            raise HTTPException(404, detail=f"no streamed predictions for ride {ride_id} yet")
        return Response(json_bytes(state.for_api()), media_type="application/json")

    def openapi() -> dict:
        # The body is parsed by hand (one validator, rides.stream.events); publish its schema anyway.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = RideEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update({"RideEventIn": body, **body.pop("$defs", {})})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


class PredictFastPath:
    """Answers POST /predict at the ASGI level, before routing and dependency handling: the
    same `RideService.answer` in a fraction of the time (see the web benchmark)."""

    def __init__(self, app, service: RideService):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                status, content = 413, json_bytes({"detail": f"body larger than {MAX_BODY_BYTES} bytes"})
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        else:
            status, content = await self.service.answer(b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, detail=f"body larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, detail=f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def app_from_env() -> FastAPI:
    """The app uvicorn runs (`rides serve`): model from MODEL_URI or RIDES_SERVE_MODEL."""
    import boto3

    from rides.serving import load_serving_model
    from rides.settings import StackNames

    names = StackNames.from_env()
    model = load_serving_model(os.environ.get("RIDES_SERVE_MODEL", "ride-duration@production"))
    decisions = DecisionStore(boto3.client("dynamodb"), names.decisions_table)
    return create_app(
        RideService(model, kinesis=boto3.client("kinesis"), input_stream=names.input_stream, decisions=decisions)
    )


def main() -> None:
    """`python -m rides.web` (the service image) and `rides serve`: uvicorn on HOST:PORT."""
    import uvicorn

    uvicorn.run(
        "rides.web:app_from_env",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WEB_WORKERS", "1")),
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
