"""The decision service: gathers each ride's predictions (duration, fare, tip; in any order,
possibly duplicated), and once the set is complete or a timeout passes, applies the rules and
publishes one decision record to `ride-decisions`.

Its promise: every ride with a prediction gets exactly one decision (one `decision_id`; a
crash between publishing and marking can repeat the record, never change it), and every
prediction record ends done, dead-lettered or reported (rides.stream.kinesis_batch). How the state
in DynamoDB makes that hold under retries, crashes and the sweep racing the stream:
rides.stream.decision.store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rides.stream.deadletter import DeadLetterSink, QueueSender
from rides.stream.decision.rules import Rule, evaluate, load_rules
from rides.stream.decision.store import COLLECTING, DECIDED, DecisionStore, RideState, is_watch
from rides.stream.events import PredictionIn, json_bytes, read_prediction
from rides.stream.failures import Failure, StoreUnavailable
from rides.stream.kinesis_batch import BatchCounts, BatchRecord, KinesisBatch, PartialBatchResponse, as_deadline
from rides.stream.model_specs import MODELS
from rides.stream.publish import KinesisPublisher

log = logging.getLogger("rides.stream.decision")

DEFAULT_REQUIRED_MODELS = tuple(model.model_name for model in MODELS if model.required)
# A write that lost a race re-reads the ride and merges again; more than this many losses in
# one batch means something is badly wrong: report the records instead.
MAX_MERGE_ROUNDS = 4


@dataclass(frozen=True)
class DecisionConfig:
    table_name: str
    decisions_stream_name: str
    dead_letter_queue_url: str | None = None
    review_queue_url: str | None = None
    required_models: tuple[str, ...] = DEFAULT_REQUIRED_MODELS
    timeout_seconds: float = 60.0
    retention_days: int = 7
    rules: tuple[Rule, ...] = field(default_factory=lambda: load_rules(None))
    publish_aggregated: bool = False  # decisions KPL-aggregated on their stream (rides.stream.publish)

    ENV_VARS = (
        "DECISIONS_TABLE",
        "DECISIONS_STREAM_NAME",
        "DEAD_LETTER_QUEUE_URL",
        "REVIEW_QUEUE_URL",
        "REQUIRED_MODELS",
        "DECISION_TIMEOUT_SECONDS",
        "DECISION_RULES",
        "PUBLISH_AGGREGATED",
    )

    def expires_at(self, now: float) -> int:
        """When an item written now is dropped (the table's TTL): rides and watch items alike."""
        return int(now + self.retention_days * 86400)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DecisionConfig:
        required = tuple(m.strip() for m in env.get("REQUIRED_MODELS", "").split(",") if m.strip())
        return cls(
            table_name=env.get("DECISIONS_TABLE") or "ride-decisions",
            decisions_stream_name=env.get("DECISIONS_STREAM_NAME") or "ride-decisions",
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            review_queue_url=env.get("REVIEW_QUEUE_URL") or None,
            required_models=required or DEFAULT_REQUIRED_MODELS,
            timeout_seconds=float(env.get("DECISION_TIMEOUT_SECONDS") or 60),
            rules=load_rules(env.get("DECISION_RULES")),
            publish_aggregated=env.get("PUBLISH_AGGREGATED", "false").strip().lower() in ("1", "true", "yes", "on"),
        )


# -- the state transitions ----------------------------------------------------------------------
def merged(state: RideState | None, predictions: Sequence[PredictionIn], now: float, config: DecisionConfig):
    """The ride with these predictions added (a duplicate changes nothing; a shadow's is kept
    apart, never decided on) and, if that made its set complete, decided. → the new state, or
    the given one when nothing changed."""
    production = [p for p in predictions if p.role != "shadow"]
    if state is None:
        state = RideState(ride_id=predictions[0].ride_id, first_seen=now, expires_at=config.expires_at(now))
    stored = dict(state.predictions)
    for prediction in production:
        stored[prediction.model] = {
            "field": prediction.field,
            "value": prediction.value,
            "version": prediction.version,
        }
    shadow = dict(state.shadow)
    for prediction in predictions:
        if prediction.role == "shadow":
            shadow[prediction.model] = {
                "field": prediction.field,
                "value": prediction.value,
                "version": prediction.version,
            }
    changed = stored != state.predictions or shadow != state.shadow
    if state.status == COLLECTING and set(config.required_models) <= set(stored):
        return decided(state, config, "complete", now, predictions=stored, shadow=shadow)
    return state.next_version(predictions=stored, shadow=shadow) if changed else state


def needs_watch(before: RideState | None, after: RideState) -> bool:
    """Whether this write starts a ride the sweep must time out: collecting, with a production
    prediction, and neither watched nor indexed before (a shadow's prediction alone decides
    nothing, so a shadow-only ride is not watched)."""
    if after.status != COLLECTING or not after.predictions:
        return False
    return before is None or (not before.predictions and before.due_at is None)


def decided(state: RideState, config: DecisionConfig, reason: str, now: float, **changes) -> RideState:
    """The ride with its one decision. `decision_id` names the version that stores it, so it is
    the same however often the record is published. Deciding takes a ride a previous version
    indexed out of the index; a failed publication is retried with its batch (the stream's) or
    from a watch item (the sweep's)."""
    state = state.next_version(**changes)
    values = {p["field"]: p["value"] for p in state.predictions.values()}
    flags, not_evaluated = evaluate(values, config.rules)
    decision = {
        "decision_id": f"{state.ride_id}:{state.version}",
        "ride_id": state.ride_id,
        "decision": "review" if flags else "accept",
        "flags": flags,
        "not_evaluated": not_evaluated,
        "complete": all(model in state.predictions for model in config.required_models),
        "reason": reason,
        "predictions": {
            model: {"field": p["field"], "value": p["value"], "version": p["version"]}
            for model, p in sorted(state.predictions.items())
        },
        "decided_at": now,
    }
    return replace(state, decision=decision, due_at=None)


# -- the stream ---------------------------------------------------------------------------------
@dataclass
class DecisionReport(BatchCounts):
    records: int = 0
    stored: int = 0  # rides written
    decided: int = 0
    published: int = 0
    queued_for_review: int = 0
    conflicts: int = 0  # writes that lost a race and merged again


def process_predictions(
    records: Sequence[Mapping],
    config: DecisionConfig,
    *,
    store: DecisionStore,
    publisher: KinesisPublisher,
    dead_letters: DeadLetterSink,
    reviews: QueueSender | None = None,
    time_left: Callable[[], float] | None = None,
    clock: Callable[[], float] | None = None,
    logger: logging.Logger | None = None,
) -> tuple[PartialBatchResponse, DecisionReport]:
    now = (clock or time.time)()
    deadline = as_deadline(time_left)
    report = DecisionReport(records=len(records))
    batch = KinesisBatch(records, logger=logger or log)
    by_ride: dict[str, list[BatchRecord]] = {}
    for item in batch.parse(read_prediction):
        by_ride.setdefault(item.value.ride_id, []).append(item)

    # A ride whose every required prediction is in this batch is most likely new: written once,
    # decided, without reading it first. The others (and those it turns out exist) are read and
    # merged. The decision mapping batches over a few seconds for this (infra/: decision_batching).
    complete = {
        ride_id: items
        for ride_id, items in by_ride.items()
        if set(config.required_models) <= {i.value.model for i in items if i.value.role != "shadow"}
    }
    states, done = _save_new(batch, complete, config, store, now, deadline, report)
    rest = {ride_id: items for ride_id, items in by_ride.items() if ride_id not in done}
    states.update(_merge_and_save(batch, rest, config, store, now, deadline, report))
    # Every ride the stream decided that a production prediction touched goes out (again, after
    # a failure or a crash: the stored decision, the same decision_id); a shadow's alone decides
    # nothing. The sweep's timeout decisions are the sweep's to publish (until out, from their
    # watch): a consumer's late prediction does not repeat them.
    production = {r for r, items in by_ride.items() if any(i.value.role != "shadow" for i in items)}
    todo = [
        state
        for ride_id, state in states.items()
        if state.status == DECIDED and ride_id in production and state.decision.get("reason") != "timeout"
    ]
    failed = _publish(todo, store, publisher, deadline, report, reviews)
    batch.report((item for ride_id in failed for item in by_ride[ride_id]), Failure.PUBLISH_FAILED)

    return report.settle(batch.finish(dead_letters, deadline)), report


def _save_new(
    batch: KinesisBatch,
    by_ride: dict[str, list[BatchRecord]],
    config: DecisionConfig,
    store: DecisionStore,
    now: float,
    deadline,
    report: DecisionReport,
) -> tuple[dict[str, RideState], set[str]]:
    """Rides decided by this batch alone, each stored with one write if it is new (the write's
    condition: no such ride yet). → (the states stored, every ride dealt with here); a ride
    that exists already is left to the merge."""
    states: dict[str, RideState] = {}
    done: set[str] = set()
    fresh = []
    for ride_id, items in by_ride.items():
        try:
            fresh.append(merged(None, [item.value for item in items], now, config))
        except Exception as exc:  # a bug in merging: retried later, and its traceback logged once
            batch.log_unexpected(exc, "merging a ride's predictions", items)
            batch.report(items, type(exc).__name__)
            done.add(ride_id)
    if not fresh:
        return states, done
    outcome = store.save(fresh, deadline)
    for state in outcome.written:
        states[state.ride_id] = state
        done.add(state.ride_id)
        report.stored += 1
        report.decided += 1
    for ride_id, code in outcome.failed.items():
        batch.report(by_ride[ride_id], code)
        done.add(ride_id)
    return states, done


def _merge_and_save(
    batch: KinesisBatch,
    by_ride: dict[str, list[BatchRecord]],
    config: DecisionConfig,
    store: DecisionStore,
    now: float,
    deadline,
    report: DecisionReport,
) -> dict[str, RideState]:
    """Merge each ride's predictions into its stored state and save what changed; a ride whose
    write lost a race is read and merged again. → every ride's state as stored now."""
    states: dict[str, RideState] = {}
    todo = list(by_ride)
    for _round in range(MAX_MERGE_ROUNDS):
        if not todo:
            break
        try:
            stored = store.get_many(todo, deadline)
        except StoreUnavailable as exc:
            log.warning("decisions table unavailable (%s): %s", exc.code, exc)
            batch.report((item for ride_id in todo for item in by_ride[ride_id]), exc.code)
            return states
        changed: list[RideState] = []
        newly_decided: set[str] = set()
        for ride_id in todo:
            items, before = by_ride[ride_id], stored.get(ride_id)
            try:
                state = merged(before, [item.value for item in items], now, config)
            except Exception as exc:  # a bug in merging: retried later, and its traceback logged once
                batch.log_unexpected(exc, "merging a ride's predictions", items)
                batch.report(items, type(exc).__name__)
                continue
            if state is before:
                states[ride_id] = state  # a duplicate: nothing to write
                continue
            changed.append(state)
            if state.status == DECIDED and (before is None or before.status == COLLECTING):
                newly_decided.add(ride_id)
        changed = _watch(batch, by_ride, changed, stored, config, store, now, deadline)
        outcome = store.save(changed, deadline)
        for state in outcome.written:
            states[state.ride_id] = state
            report.stored += 1
            report.decided += state.ride_id in newly_decided
        for ride_id, code in outcome.failed.items():
            batch.report(by_ride[ride_id], code)
        report.conflicts += len(outcome.conflicts)
        todo = outcome.conflicts
    batch.report((item for ride_id in todo for item in by_ride[ride_id]), "WriteConflict")
    return states


def _watch(batch, by_ride, changed: list[RideState], stored: dict, config: DecisionConfig, store, now, deadline):
    """Write the watch item of the rides this batch starts collecting, before the rides: a
    collecting ride is never stored unwatched. If it cannot be written, those rides are not
    written either: their records are reported (retried). → the states to save."""
    new = [state.ride_id for state in changed if needs_watch(stored.get(state.ride_id), state)]
    if not new:
        return changed
    code = store.watch(new, now + config.timeout_seconds, config.expires_at(now), deadline)
    if code is None:
        return changed
    batch.report((item for ride_id in new for item in by_ride[ride_id]), code)
    unwatched = set(new)
    return [state for state in changed if state.ride_id not in unwatched]


def _publish(
    states: Sequence[RideState],
    store: DecisionStore,
    publisher: KinesisPublisher,
    deadline,
    report,
    reviews: QueueSender | None = None,
) -> set[str]:
    """Publish the decisions of decided rides, queue those to review, then mark them
    published. → ride ids whose decision did not go out (or, to review, not into the queue).
    A ride not marked stays `decided`: the sweep publishes (and queues) it again, with the same
    `decision_id`, later; readers of the stream and of the queue drop repeats by it."""
    if not states:
        return set()
    result = publisher.publish([(state.ride_id, json_bytes(state.decision)) for state in states], deadline)
    failed = {states[i].ride_id for i in result.failed}
    out = [state for state in states if state.ride_id not in failed]
    if reviews is not None:
        to_review = [state for state in out if state.decision["decision"] == "review"]
        unsent = {to_review[i].ride_id for i in reviews.send([json_bytes(s.decision) for s in to_review], deadline)}
        report.queued_for_review += len(to_review) - len(unsent)
        failed |= unsent
        out = [state for state in out if state.ride_id not in unsent]
    report.published += len(out)
    # Only the sweep's decisions wait in the index to be marked: the stream's are retried with
    # their batch, and marking them would cost a write per ride (the index write besides).
    marked = store.mark_published([state for state in out if state.due_at is not None], deadline)
    if marked.failed or marked.conflicts:
        log.warning(
            "%d published decisions not marked (%s); the sweep publishes them again",
            len(marked.failed) + len(marked.conflicts),
            sorted(set(marked.failed.values())) or "conflict",
        )
    return failed


# -- the sweep ----------------------------------------------------------------------------------
@dataclass
class SweepResult:
    timed_out: int = 0  # rides decided now with what had arrived
    published: int = 0  # decisions put on the stream (timed out now, or decided before but not out)
    queued_for_review: int = 0
    failed: int = 0  # decisions that did not go out (the next sweep tries again)
    conflicts: int = 0  # rides that changed while the sweep looked (left to the next look)
    complete: bool = True  # False when the deadline stopped it before the index was done


def sweep(
    config: DecisionConfig,
    *,
    store: DecisionStore,
    publisher: KinesisPublisher,
    reviews: QueueSender | None = None,
    clock: Callable[[], float] | None = None,
    time_left: Callable[[], float] | None = None,
) -> SweepResult:
    """Decide the rides whose predictions stopped coming, and publish every timeout decision
    that is not out yet; page by page of the due index, until it is done or the time is up.

    A page holds watch items (rides a batch started collecting) and, from a previous version,
    rides in the index themselves. The watched rides the sweep could not finish (a write that
    lost a race with the stream, a publication that failed) go into a new watch item, due a
    timeout later, before the page's watch items are deleted: a crash in between repeats work
    (the same `decision_id`), never loses it."""
    now = (clock or time.time)()
    deadline = as_deadline(time_left)
    result = SweepResult()
    for keys in store.due(now, deadline):
        try:
            watches = store.watched([key for key in keys if is_watch(key)], deadline)
        except StoreUnavailable as exc:
            if exc.code != Failure.DEADLINE_PASSED:
                raise  # the table is gone or refuses us: an error the function's alarm sees
            break
        for indexed, some in _groups([key for key in keys if not is_watch(key)], watches):
            if deadline.passed or not _sweep_rides(
                indexed, some, config, store, publisher, reviews, now, deadline, result
            ):
                break
        if deadline.passed or not result.complete:
            break
    result.complete = result.complete and not deadline.passed
    return result


def _groups(indexed: list[str], watches: dict[str, list[str]], size: int = 100):
    """A page's work in groups of about `size` rides (whole watch items), so the deadline is
    checked between groups: (indexed ride ids, {watch key: its rides})."""
    group: dict[str, list[str]] = {}
    count = 0
    for key, ride_ids in watches.items():
        if group and count + len(ride_ids) > size:
            yield [], group
            group, count = {}, 0
        group[key] = ride_ids
        count += len(ride_ids)
    if group or indexed:
        yield indexed, group


def _sweep_rides(indexed, watches, config, store, publisher, reviews, now, deadline, result: SweepResult) -> bool:
    """Decide, publish and watch again what needs it, for a group of rides (indexed the old way,
    or listed by watch items); then delete the watch items. → False when the sweep must stop."""
    watched = {ride_id for ride_ids in watches.values() for ride_id in ride_ids}
    try:
        states = store.get_many([*indexed, *sorted(watched)], deadline)
    except StoreUnavailable as exc:
        if exc.code != Failure.DEADLINE_PASSED:
            raise  # the table is gone or refuses us: an error the function's alarm sees
        return False
    overdue = [
        decided(state, config, "timeout", now)
        for state in states.values()
        if state.status == COLLECTING and state.predictions and state.first_seen + config.timeout_seconds <= now
    ]
    outcome = store.save(overdue, deadline)
    result.timed_out += len(outcome.written)
    result.conflicts += len(outcome.conflicts)  # the stream changed it meanwhile: look again
    # decided by a sweep before and maybe not out: watched still, or indexed the old way
    stranded = [
        s
        for s in states.values()
        if s.status == DECIDED
        and s.decision.get("reason") == "timeout"
        and (s.ride_id in watched or (s.due_at is not None and s.due_at <= now))
    ]
    written = {s.ride_id for s in outcome.written}
    todo = outcome.written + [s for s in stranded if s.ride_id not in written]
    failed = _publish(todo, store, publisher, deadline, result, reviews)
    result.failed += len(failed)
    done = written | {s.ride_id for s in stranded}
    # another look: a decision not out, or a ride still collecting as far as the sweep knows
    again = sorted(
        ride_id
        for ride_id in watched | failed | set(outcome.failed) | set(outcome.conflicts)
        if ride_id in states and (ride_id in failed or (ride_id not in done and states[ride_id].status == COLLECTING))
    )
    # These two small writes go even past the deadline: without them the group is done again.
    if again and store.watch(again, now + config.timeout_seconds, config.expires_at(now)) is not None:
        result.complete = False  # the group's watch items stay: the next sweep does them again
        return False
    store.unwatch(list(watches))
    return True
