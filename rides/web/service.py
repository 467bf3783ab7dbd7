"""The web service's work, apart from HTTP: the quick model's answer, the ride put on the
stream with the rider's consent, and waiting for what the stream made of it (the decisions
table)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator

import orjson

from rides.stream.decision import DecisionStore, RideState
from rides.stream.events import InvalidEvent, RideEvent, json_bytes, ride_event_json, validate_event
from rides.stream.features import features_from_events
from rides.stream.model import LoadedModel
from rides.stream.publish import KinesisPublisher
from rides.web.auth import ANONYMOUS, Client
from rides.web.schema import (
    MAX_RIDES_PER_REQUEST,
    MAX_WAIT_SECONDS,
    Streamed,
    error_body,
    error_location,
    sse,
)

# How often a waiting request reads the decisions table: quickly at first, then every half second.
FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.05, 0.5


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
            return (*error_body(422, ["body"], f"bad JSON: {exc}", "json_invalid"), [])
        single = isinstance(payload, dict)
        items = [payload] if single else payload
        if not isinstance(items, list) or not items:
            return (*error_body(422, ["body"], "a ride event or a non-empty list of them"), [])
        if len(items) > MAX_RIDES_PER_REQUEST:
            return 413, json_bytes({"detail": f"at most {MAX_RIDES_PER_REQUEST} rides per request"}), []
        events = []
        for index, item in enumerate(items):
            where = ["body"] if single else ["body", index]
            try:
                events.append(validate_event(item))
            except InvalidEvent as exc:
                return (*error_body(422, where + error_location(str(exc)), str(exc)), [])
            if not isinstance(item.get("stream", False), bool):
                return (*error_body(422, [*where, "stream"], "stream must be true or false"), [])
        wanted = [i for i, item in enumerate(items) if item.get("stream") is True]
        if wanted and not client.may("stream"):
            return 403, json_bytes({"detail": f"API key {client.name!r} may not put rides on the stream"}), []
        # Records of one ride id go out one at a time, in order (rides.stream.publish): many
        # copies of one ride would be as many serial puts. A ride goes on the stream once.
        repeated = [key for key, n in Counter(events[i].partition_key for i in wanted).items() if n > 1]
        if repeated:
            message = f"ride_id {repeated[0]} is sent to the stream more than once in this request"
            return (*error_body(422, ["body"], message), [])
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
                return (*error_body(422, [*where, "ride", "trip_distance"], message), [])
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
                return error_body(422, [*where, "ride"], f"cannot build features: {type(exc).__name__}: {exc}")
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
            yield sse("quick", quick)
        sent_enhanced = False
        for until in ("enhanced", "decision"):
            left = wait - (time.monotonic() - started)
            state, done = await self.wait_for(ride_id, left, until)
            if not sent_enhanced and (enhanced := self.enhanced(state)) is not None:
                yield sse("enhanced", {**enhanced, "after_ms": round((time.monotonic() - started) * 1000)})
                sent_enhanced = True
            if not done:
                yield sse(
                    "timeout",
                    {
                        "ride_id": ride_id,
                        "waited_s": round(time.monotonic() - started, 3),
                        "known": state.for_api() if state else None,
                    },
                )
                return
        yield sse("decision", {**state.decision, "after_ms": round((time.monotonic() - started) * 1000)})
