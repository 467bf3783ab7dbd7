"""`rides serve`: the combined mode. A simple, fast model answers at once; with the rider's
consent the ride also goes on the stream, where the accurate model's answer and the decision
follow.

- POST /predict: one ride event (the stream's contract) or a list of them → the quick model's
  duration now (`ride-duration-quick@production`), naming the model and version that answered.
  With `"stream": true` the ride also goes onto `ride-events`; the quick answer never waits on
  or fails with that put, and the response says whether it was queued. With
  `Accept: text/event-stream` (one ride): server-sent events `quick`, `enhanced` (the stream
  model's prediction), `decision`, or `timeout` when `?wait=` seconds pass first.
- GET /predictions/{ride_id}: what the stream made of the ride (the decisions table), 404 until
  then; `?wait=S` long-polls until the enhanced prediction is there (`&until=decision`: the
  decision), else answers 202 with what is known. GET /predictions/{ride_id}/events: the same as
  server-sent events.
- GET /health: model loaded, name and version.
- API keys (rides.web_auth) on every route but /health and the docs, on by default.
Same loader, feature function and publisher as the consumer; OpenAPI docs at /docs.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rides.stream.decision import DecisionStore, RideState
from rides.stream.events import MAX_ZONE, MIN_ZONE, InvalidEvent, RideEvent, json_bytes, ride_event_json, validate_event
from rides.stream.features import features_from_events
from rides.stream.model import LoadedModel
from rides.stream.publish import KinesisPublisher
from rides.web_auth import ANONYMOUS, ApiKeys, Client

MAX_BODY_BYTES = 1024 * 1024
MAX_RIDES_PER_REQUEST = 1000
# Longest wait a request may ask for: under the function's timeout on AWS (infra/modules/web_service).
MAX_WAIT_SECONDS = float(os.environ.get("RIDES_MAX_WAIT_SECONDS") or 25.0)  # lower it to test waits quickly
# How often a waiting request reads the decisions table: quickly at first, then every half second.
FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.05, 0.5
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


def _documented(*statuses: int, events: bool = False, ok: type | None = None) -> dict:
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
        enhanced_model: str | None = None,
    ):
        self.model = model
        self.publisher = KinesisPublisher(kinesis, input_stream, concurrency=1) if kinesis and input_stream else None
        self.decisions = decisions
        # The stream model whose prediction is the enhanced answer: ride-duration for ride-duration-quick.
        self.enhanced_model = enhanced_model or model.name.removesuffix("-quick")

    async def answer(self, body: bytes, client: Client = ANONYMOUS) -> tuple[int, bytes]:
        """POST /predict: request body → (status, JSON body). Errors in FastAPI's shape."""
        status, content, _ = await self.answer_rides(body, client)
        return status, content

    async def answer_rides(self, body: bytes, client: Client = ANONYMOUS) -> tuple[int, bytes, list[dict]]:
        """POST /predict → (status, JSON body, the answers). Errors in FastAPI's shape."""
        if not client.may("predict"):
            return 403, json_bytes({"detail": f"API key {client.name!r} may not ask for predictions"}), []
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return (*_error(422, ["body"], f"bad JSON: {exc}", "json_invalid"), [])
        single = isinstance(payload, dict)
        items = [payload] if single else payload
        if not isinstance(items, list) or not items:
            return (*_error(422, ["body"], "a ride event or a non-empty list of them"), [])
        if len(items) > MAX_RIDES_PER_REQUEST:
            return 413, json_bytes({"detail": f"at most {MAX_RIDES_PER_REQUEST} rides per request"}), []
        events = []
        for index, item in enumerate(items):
            where = ["body"] if single else ["body", index]
            try:
                events.append(validate_event(item))
            except InvalidEvent as exc:
                return (*_error(422, where + _field(str(exc)), str(exc)), [])
            if not isinstance(item.get("stream", False), bool):
                return (*_error(422, [*where, "stream"], "stream must be true or false"), [])
        wanted = [i for i, item in enumerate(items) if item.get("stream") is True]
        if wanted and not client.may("stream"):
            return 403, json_bytes({"detail": f"API key {client.name!r} may not put rides on the stream"}), []
        # Records of one ride id go out one at a time, in order (rides.stream.publish): many
        # copies of one ride would be as many serial puts. A ride goes on the stream once.
        repeated = [key for key, n in Counter(events[i].partition_key for i in wanted).items() if n > 1]
        if repeated:
            message = f"ride_id {repeated[0]} is sent to the stream more than once in this request"
            return (*_error(422, ["body"], message), [])
        # Before anything goes on the stream: what the consumers would dead-letter (a ride that
        # breaks the feature function, or that no model can give a finite number for) is the
        # caller's 422 here, never a queued ride and never a `null` duration.
        try:
            durations = self.predict(events)
        except Exception:
            return (*self._unfeaturable(events, single), [])
        for i, duration in enumerate(durations):
            if not math.isfinite(duration):
                where = ["body"] if single else ["body", i]
                message = (
                    f"no finite duration for ride {events[i].ride_id} (the model gives {duration}): "
                    f"ride.trip_distance {events[i].trip_distance:g} is out of any useful range"
                )
                return (*_error(422, [*where, "ride", "trip_distance"], message), [])
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
        return 200, json_bytes(out[0] if single else out), out

    def predict(self, events: list[RideEvent]) -> list[float]:
        return self.model.predict(features_from_events(events)).tolist()

    def _unfeaturable(self, events: list[RideEvent], single: bool) -> tuple[int, bytes]:
        """The first ride the feature function (or the model) cannot take, as a 422."""
        for i, event in enumerate(events):
            try:
                self.predict([event])
            except Exception as exc:
                where = ["body"] if single else ["body", i]
                return _error(422, [*where, "ride"], f"cannot build features: {type(exc).__name__}: {exc}")
        raise RuntimeError("the batch failed but no single ride does")  # a real bug: a 500 with its trace

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

    async def wait_for(self, ride_id: str, wait: float, until: str = "enhanced") -> tuple[RideState | None, bool]:
        """Read the ride's stream state until it has the enhanced prediction (or the decision),
        or `wait` seconds pass. → (state or None, whether it got there)."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        pause = FIRST_POLL_SECONDS
        while True:
            state = await asyncio.to_thread(self.decisions.get, ride_id)
            if self.reached(state, until):
                return state, True
            left = deadline - time.monotonic()
            if left <= 0:
                return state, False
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_POLL_SECONDS)

    def reached(self, state: RideState | None, until: str) -> bool:
        if state is None:
            return False
        if until == "decision":
            return state.decision is not None
        return self.enhanced_model in state.predictions

    def enhanced(self, state: RideState | None) -> dict | None:
        """The stream model's prediction for the ride, in the quick answer's shape."""
        found = state.predictions.get(self.enhanced_model) if state else None
        if found is None:
            return None
        return {
            "ride_id": state.ride_id,
            found["field"]: found["value"],
            "model": self.enhanced_model,
            "version": found["version"],
        }

    async def events(self, ride_id: str, wait: float, quick: dict | None = None) -> AsyncIterator[bytes]:
        """Server-sent events: the quick answer (if given), the enhanced prediction, the
        decision; `timeout` with what is known when `wait` seconds pass first."""
        started = time.monotonic()
        if quick is not None:
            yield _sse("quick", quick)
        sent_enhanced = False
        for until in ("enhanced", "decision"):
            left = wait - (time.monotonic() - started)
            state, done = await self.wait_for(ride_id, left, until)
            if not sent_enhanced and (enhanced := self.enhanced(state)) is not None:
                yield _sse("enhanced", {**enhanced, "after_ms": round((time.monotonic() - started) * 1000)})
                sent_enhanced = True
            if not done:
                yield _sse(
                    "timeout",
                    {
                        "ride_id": ride_id,
                        "waited_s": round(time.monotonic() - started, 3),
                        "known": state.for_api() if state else None,
                    },
                )
                return
        yield _sse("decision", {**state.decision, "after_ms": round((time.monotonic() - started) * 1000)})


def _sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"


def create_app(service: RideService, auth: ApiKeys | None = None):
    """The ASGI app: FastAPI (docs, health, predictions) behind the API-key check and the
    /predict fast path. `auth` None: no authentication (the local stack)."""
    return RidesApp(_fastapi_app(service), service, auth)


def _fastapi_app(service: RideService) -> FastAPI:
    app = FastAPI(
        title="rides",
        version="1",
        default_response_class=ORJSONResponse,
        description="Ride duration predictions: instant over HTTP, richer over the stream.",
    )

    @app.get("/health", responses=_documented(200))
    def health() -> dict:
        model = service.model
        return {"status": "ok", "model": model.name, "version": model.version, "flavor": model.flavor}

    @app.post(
        "/predict",
        response_model=PredictionOut | list[PredictionOut],
        responses=_documented(200, 401, 403, 413, 422, events=True),
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
    async def predict(request: Request, wait: float = Query(MAX_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)):
        # JSON answers normally come from RidesApp's fast path before routing; this route serves
        # server-sent events, the docs, and any deployment that mounts the app without it.
        client = _client(request)
        status, content, answers = await service.answer_rides(await _read_body(request), client)
        if not _wants_events(request.scope) or status != 200:
            return Response(content, status_code=status, media_type="application/json")
        if len(answers) != 1:
            content = _error(422, ["body"], "server-sent events answer one ride per request")[1]
            return Response(content, status_code=422, media_type="application/json")
        [quick] = answers
        if service.decisions is None or not quick.get("stream", {}).get("queued"):
            return StreamingResponse(_once(_sse("quick", quick)), media_type="text/event-stream")
        return StreamingResponse(
            service.events(str(quick["ride_id"]), wait, quick), media_type="text/event-stream", headers=NO_BUFFERING
        )

    @app.get(
        "/predictions/{ride_id}",
        response_model=StreamStateOut,
        responses=_documented(200, 202, 401, 403, 404, 422, ok=StreamStateOut),
    )
    async def streamed_predictions(
        ride_id: str,
        request: Request,
        wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for the stream's answer"),
        until: str = Query("enhanced", pattern="^(enhanced|decision)$"),
    ):
        _require(request, "read")
        if service.decisions is None:
            raise HTTPException(404, detail="no decisions table configured")
        state, done = await service.wait_for(ride_id, wait, until)
        if not wait:  # the original contract: what is stored, 404 until something is
            if state is None:
                raise HTTPException(404, detail=f"no streamed predictions for ride {ride_id} yet")
            return Response(json_bytes(state.for_api()), media_type="application/json")
        body = (
            state.for_api() if state else {"ride_id": ride_id, "status": "pending", "predictions": {}, "decision": None}
        )
        return Response(json_bytes(body), status_code=200 if done else 202, media_type="application/json")

    @app.get(
        "/predictions/{ride_id}/events",
        response_class=StreamingResponse,
        responses=_documented(200, 401, 403, 404, 422, events=True),
    )
    async def streamed_events(
        ride_id: str, request: Request, wait: float = Query(MAX_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    ):
        _require(request, "read")
        if service.decisions is None:
            raise HTTPException(404, detail="no decisions table configured")
        return StreamingResponse(service.events(ride_id, wait), media_type="text/event-stream", headers=NO_BUFFERING)

    def openapi() -> dict:
        # The body is parsed by hand (one validator, rides.stream.events); publish its schema anyway.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = RideEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update({"RideEventIn": body, **body.pop("$defs", {})})
            # Every route but /health needs a key (RidesApp checks it before routing).
            schema["components"]["securitySchemes"] = {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
            for path, operations in schema["paths"].items():
                if path not in PUBLIC_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}, {"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


NO_BUFFERING = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def _once(item: bytes) -> AsyncIterator[bytes]:
    yield item


def _wants_events(scope) -> bool:
    return any(name == b"accept" and b"text/event-stream" in value for name, value in scope["headers"])


def _client(request: Request) -> Client:
    return request.scope.get("state", {}).get("client", ANONYMOUS)


def _require(request: Request, scope: str) -> None:
    client = _client(request)
    if not client.may(scope):
        raise HTTPException(403, detail=f"API key {client.name!r} may not {scope}")


class RidesApp:
    """The ASGI entry: the API-key check for every route but /health and the docs, then
    POST /predict answered at the ASGI level, before routing and dependency handling (the same
    `RideService.answer` in a fraction of the time, see the web benchmark), and everything else
    (server-sent events included) by FastAPI."""

    def __init__(self, app, service: RideService, auth: ApiKeys | None = None):
        self.app = app
        self.service = service
        self.auth = auth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = ANONYMOUS
        if self.auth is not None and scope["path"] not in PUBLIC_PATHS:
            client = self.auth.client(scope["headers"])
            if client is None:
                content = json_bytes({"detail": "a valid API key is required (x-api-key or Authorization: Bearer)"})
                return await _respond(send, 401, content, [(b"www-authenticate", b"Bearer")])
            scope.setdefault("state", {})["client"] = client  # what request.state.client reads
        if scope["path"] != "/predict" or scope["method"] != "POST" or _wants_events(scope):
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
            status, content = await self.service.answer(b"".join(chunks), client)
        await _respond(send, status, content)


async def _respond(send, status: int, content: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *(headers or []),
            ],
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


DEFAULT_MODEL = "ride-duration-quick@production"


def app_from_env():
    """The app uvicorn runs (`rides serve`): model from MODEL_URI or RIDES_SERVE_MODEL, API keys
    from the environment (rides.web_auth)."""
    import boto3

    from rides import web_auth
    from rides.serving import load_serving_model
    from rides.settings import StackNames

    auth = web_auth.from_env()  # first: no keys, no service (before any slower set-up)
    names = StackNames.from_env()
    model = load_serving_model(os.environ.get("RIDES_SERVE_MODEL", DEFAULT_MODEL))
    decisions = DecisionStore(boto3.client("dynamodb"), names.decisions_table)
    return create_app(
        RideService(model, kinesis=boto3.client("kinesis"), input_stream=names.input_stream, decisions=decisions),
        auth,
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
