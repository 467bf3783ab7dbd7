"""The ledger of a fault-injection run (rides.local.chaos): every input record accounted for in
every place it may end (a prediction from each consumer, one decision, a dead letter, a
failed-batch pointer), or counted as lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rides.stream.events import InvalidEvent, parse_record_data


@dataclass
class Pointer:
    function_name: str
    shard_id: str
    start: int
    end: int

    def covers(self, shard_id: str, sequence_number: str) -> bool:
        return shard_id == self.shard_id and self.start <= int(sequence_number) <= self.end


@dataclass
class Ledger:
    rides: int = 0
    malformed: int = 0
    models: tuple[str, ...] = ()
    predicted: dict[str, int] = field(default_factory=dict)  # model → rides with a prediction
    duplicate_predictions: dict[str, int] = field(default_factory=dict)  # identifiable repeats
    unidentifiable_duplicates: int = 0  # a repeat naming another source record
    decided: int = 0  # rides with exactly one decision id
    repeated_decision_records: int = 0  # the same decision_id published again
    conflicting_decisions: int = 0  # rides with two decision ids
    dead_lettered: int = 0  # malformed records found in the dead-letter queue
    dead_letters: int = 0  # letters (each consumer letters each malformed record)
    reasons: dict[str, int] = field(default_factory=dict)
    in_failed_batches: dict[str, int] = field(default_factory=dict)  # model → rides only pointed to
    failed_batch_pointers: int = 0
    strays: list[str] = field(default_factory=list)  # records in a place they do not belong
    lost: dict[str, int] = field(default_factory=dict)  # "ride-fare" / "decision" / "dead letter" → n
    lost_examples: list[str] = field(default_factory=list)

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    @property
    def accounted(self) -> bool:
        """Every record in exactly one known place (failed batches count as one)."""
        return (
            not self.total_lost
            and not self.strays
            and not self.unidentifiable_duplicates
            and not (self.conflicting_decisions)
        )

    @property
    def complete(self) -> bool:
        """…and nothing left waiting in the failed-batches queue."""
        return self.accounted and not self.failed_batch_pointers

    def format(self, title: str = "ledger") -> str:
        lines = [
            f"{title}",
            "-" * len(title),
            f"input records        {self.rides + self.malformed:>8,}"
            f"  ({self.rides:,} rides + {self.malformed} malformed)",
        ]
        for model in self.models:
            lines.append(
                f"{model:<20} {self.predicted.get(model, 0):>8,}  rides with a prediction"
                f"  (+{self.duplicate_predictions.get(model, 0):,} repeats naming their source record;"
                f" {self.in_failed_batches.get(model, 0):,} only in failed batches)"
            )
        lines += [
            f"decisions            {self.decided:>8,}  rides with one decision_id"
            f"  (+{self.repeated_decision_records:,} repeated records; {self.conflicting_decisions} conflicting)",
            f"dead letters         {self.dead_lettered:>8,}  malformed records  ({self.dead_letters:,} letters)",
            f"failed batches       {self.failed_batch_pointers:>8,}  pointers waiting for rides redrive",
            f"strays               {len(self.strays):>8,}",
            f"unidentifiable dups  {self.unidentifiable_duplicates:>8,}",
            f"lost                 {self.total_lost:>8,}  {dict(self.lost) if self.lost else ''}",
        ]
        if self.reasons:
            lines.append("dead letters by reason (each consumer letters what it cannot read, again on a retry):")
            lines += [f"  {n:>5} x {reason}" for reason, n in sorted(self.reasons.items())]
        lines += [f"  stray: {s}" for s in self.strays[:5]]
        lines += [f"  lost: {s}" for s in self.lost_examples[:5]]
        return "\n".join(lines)


@dataclass
class Observed:
    """Everything read from the stack: the inputs and every place a record may end."""

    inputs: list[dict] = field(default_factory=list)  # {"shard_id", "sequence_number", "data"}
    predictions: list[dict] = field(default_factory=list)  # prediction records
    prediction_at: list[tuple[str, int]] = field(default_factory=list)  # (shard, sequence number) of each
    decisions: list[dict] = field(default_factory=list)  # decision records
    letters: list[dict] = field(default_factory=list)  # dead-letter bodies
    pointers: list[Pointer] = field(default_factory=list)  # failed batches


def build_ledger(observed: Observed, models: tuple[str, ...], functions: dict[str, str], input_stream: str) -> Ledger:
    """Account for every input record. `functions` maps a consumer's function name to its model."""
    ledger = Ledger(models=models)
    rides: dict[str, dict] = {}  # ride id → its input record
    malformed: dict[tuple[str, str], dict] = {}
    for record in observed.inputs:
        try:
            event = parse_record_data(record["data"])
        except InvalidEvent:
            malformed[(record["shard_id"], record["sequence_number"])] = record
            continue
        rides[str(event.ride_id)] = record
    ledger.rides, ledger.malformed = len(rides), len(malformed)

    seen: dict[tuple[str, str], Counter] = {}
    for body in observed.predictions:
        ride, model = str(body["prediction"]["ride_id"]), body.get("model")
        if ride not in rides or model not in models:
            ledger.strays.append(f"prediction of {model} for unknown ride {ride}")
            continue
        seen.setdefault((ride, model), Counter())[str((body.get("source") or {}).get("sequence_number"))] += 1
    for (ride, _model), sources in seen.items():
        if set(sources) != {rides[ride]["sequence_number"]}:
            ledger.unidentifiable_duplicates += 1
    for model in models:
        with_prediction = [ride for ride in rides if (ride, model) in seen]
        ledger.predicted[model] = len(with_prediction)
        ledger.duplicate_predictions[model] = sum(sum(seen[(r, model)].values()) - 1 for r in with_prediction)

    pointed: dict[str, set[str]] = {}  # model (or "decision") → rides pointed to by a failed batch
    for pointer in observed.pointers:
        model = functions.get(pointer.function_name)
        if model is not None:  # a consumer's: a range of ride events
            for ride, record in rides.items():
                if pointer.covers(record["shard_id"], record["sequence_number"]):
                    pointed.setdefault(model, set()).add(ride)
            continue
        # the decision service's: a range of prediction records
        for body, (shard, sequence) in zip(observed.predictions, observed.prediction_at, strict=True):
            if pointer.covers(shard, str(sequence)):
                pointed.setdefault("decision", set()).add(str(body["prediction"]["ride_id"]))
    ledger.failed_batch_pointers = len(observed.pointers)
    for model in models:
        missing = [ride for ride in rides if (ride, model) not in seen]
        only_pointed = [ride for ride in missing if ride in pointed.get(model, set())]
        ledger.in_failed_batches[model] = len(only_pointed)
        lost = [ride for ride in missing if ride not in pointed.get(model, set())]
        if lost:
            ledger.lost[model] = len(lost)
            ledger.lost_examples += [f"{model} for ride {ride}" for ride in lost[:3]]

    decision_ids: dict[str, Counter] = {}
    for body in observed.decisions:
        ride = str(body.get("ride_id"))
        if ride not in rides:
            ledger.strays.append(f"decision for unknown ride {ride}")
            continue
        decision_ids.setdefault(ride, Counter())[body.get("decision_id")] += 1
    for ride in rides:
        ids = decision_ids.get(ride)
        if not ids:
            # Waiting for a prediction that is in a failed batch is a known place too.
            if not any(ride in pointed.get(model, set()) for model in (*models, "decision")):
                ledger.lost["decision"] = ledger.lost.get("decision", 0) + 1
                ledger.lost_examples.append(f"decision for ride {ride}")
        elif len(ids) > 1:
            ledger.conflicting_decisions += 1
        else:
            ledger.decided += 1
            ledger.repeated_decision_records += sum(ids.values()) - 1

    lettered: set[tuple[str, str]] = set()
    reasons: Counter = Counter()
    for body in observed.letters:
        source = body.get("source") or {}
        key = (source.get("shard_id"), str(source.get("sequence_number")))
        stream = (source.get("stream_arn") or "").rsplit("/", 1)[-1]
        if stream == input_stream and key in malformed:
            lettered.add(key)
            reasons[body.get("error", "?").split(":")[0][:60]] += 1
        else:
            ledger.strays.append(f"dead letter from {stream} {key}: {body.get('error')}")
    ledger.dead_letters = len(observed.letters)
    ledger.dead_lettered = len(lettered)
    ledger.reasons = dict(reasons)
    not_lettered = set(malformed) - lettered
    if not_lettered:
        ledger.lost["dead letter"] = len(not_lettered)
        ledger.lost_examples += [f"malformed record {key} not in the dead-letter queue" for key in sorted(not_lettered)]
    return ledger
