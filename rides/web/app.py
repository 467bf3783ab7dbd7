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
- API keys (rides.web.auth) on every route but /health and the docs, on by default.
Same loader, feature function and publisher as the consumer; OpenAPI docs at /docs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from rides.stream.decision import DecisionStore
from rides.stream.events import json_bytes
from rides.web.auth import ANONYMOUS, ApiKeys, Client
from rides.web.schema import (
    MAX_BODY_BYTES,
    MAX_RIDES_PER_REQUEST,
    MAX_WAIT_SECONDS,
    PUBLIC_PATHS,
    ORJSONResponse,
    PredictionOut,
    RideEventIn,
    StreamStateOut,
    documented,
    error_body,
    sse,
)
from rides.web.service import RideService


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

    @app.get("/health", responses=documented(200))
    def health() -> dict:
        model = service.model
        return {"status": "ok", "model": model.name, "version": model.version, "flavor": model.flavor}

    @app.post(
        "/predict",
        response_model=PredictionOut | list[PredictionOut],
        responses=documented(200, 401, 403, 413, 422, events=True),
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
            content = error_body(422, ["body"], "server-sent events answer one ride per request")[1]
            return Response(content, status_code=422, media_type="application/json")
        [quick] = answers
        if service.decisions is None or not quick.get("stream", {}).get("queued"):
            return StreamingResponse(_once(sse("quick", quick)), media_type="text/event-stream")
        return StreamingResponse(
            service.events(str(quick["ride_id"]), wait, quick), media_type="text/event-stream", headers=NO_BUFFERING
        )

    @app.get(
        "/predictions/{ride_id}",
        response_model=StreamStateOut,
        responses=documented(200, 202, 401, 403, 404, 422, ok=StreamStateOut),
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
        responses=documented(200, 401, 403, 404, 422, events=True),
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
    from the environment (rides.web.auth)."""
    import boto3

    from rides.models.serving import load_serving_model
    from rides.settings import StackNames
    from rides.web import auth as web_auth

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
        "rides.web.app:app_from_env",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        workers=int(os.environ.get("WEB_WORKERS", "1")),
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
