"""What a completion joined with its ride counts: the (ride, model version, role) pairs and the
ADDs of their error sums, per hour, for both sides of a challenger, and a probe ride's trace."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rides.stream.decision.store import RideState
from rides.stream.evaluation.waiting import Waiting

TRACE_PREFIX = "smoke-"  # rides the smoke test sends: their join is kept, per ride
SUMS_DAYS = 30  # how long an hour's sums are kept (TTL)
TRACE_DAYS = 7


@dataclass(frozen=True)
class Evaluated:
    """One (ride, model version, role) pair: what was predicted and what happened."""

    ride_id: str
    model: str
    version: str
    role: str
    field: str
    predicted: float
    actual: float
    hour: str  # the hour it was counted in, YYYY-MM-DDTHH (UTC)

    @property
    def error(self) -> float:
        return self.predicted - self.actual


def hour_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H")


def joined(ride: RideState, waiting: Waiting, now: float) -> list[Evaluated]:
    """Every prediction the ride's item holds (production's and a challenger's) whose field
    has an outcome, with that outcome, in the hour it is counted."""
    hour = hour_of(now)
    out = []
    for role, predictions in (("production", ride.predictions), ("shadow", ride.shadow)):
        for model, p in sorted(predictions.items()):
            actual = waiting.outcomes.get(p["field"])
            if actual is not None:
                out.append(
                    Evaluated(ride.ride_id, model, str(p["version"]), role, p["field"], float(p["value"]), actual, hour)
                )
    return out


class Sums:
    """The ADDs of a set of pairs: one update per sums item and per paired item."""

    def __init__(self):
        self.sums: dict[str, list[float]] = {}  # sk → n, se, sse, sae
        self.paired: dict[str, list[float]] = {}  # sk → n, then se, sse, sae of the challenger, of the incumbent
        self.traces: dict[str, list[Evaluated]] = {}

    def keys_after(self, pairs: Sequence[Evaluated]) -> int:
        """How many items would be written with these pairs added."""
        sums, paired, traces = set(self.sums), set(self.paired), set(self.traces)
        for sk, kind in self._keys(pairs):
            (sums if kind == "sums" else paired if kind == "paired" else traces).add(sk)
        return len(sums) + len(paired) + len(traces)

    @staticmethod
    def _keys(pairs: Sequence[Evaluated]):
        for e in pairs:
            yield f"{e.model}#{e.version}#{e.role}#{e.hour}", "sums"
            if e.ride_id.startswith(TRACE_PREFIX):
                yield e.ride_id, "trace"
        for challenger, incumbent in sides(pairs):
            yield f"{challenger.model}#{challenger.version}#{incumbent.version}#{challenger.hour}", "paired"

    def add(self, pairs: Sequence[Evaluated]) -> None:
        for e in pairs:
            error = e.error
            row = self.sums.setdefault(f"{e.model}#{e.version}#{e.role}#{e.hour}", [0, 0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += error
            row[2] += error * error
            row[3] += abs(error)
            if e.ride_id.startswith(TRACE_PREFIX):
                self.traces.setdefault(e.ride_id, []).append(e)
        for challenger, incumbent in sides(pairs):
            sk = f"{challenger.model}#{challenger.version}#{incumbent.version}#{challenger.hour}"
            row = self.paired.setdefault(sk, [0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            for offset, e in ((1, challenger), (4, incumbent)):
                row[offset] += e.error
                row[offset + 1] += e.error * e.error
                row[offset + 2] += abs(e.error)

    def actions(self, table: str, now: float) -> list[dict]:
        ttl = {"N": str(int(now + SUMS_DAYS * 86400))}
        out = []
        for pk, rows, names in (
            ("sums", self.sums, ("n", "se", "sse", "sae")),
            ("paired", self.paired, ("n", "c_se", "c_sse", "c_sae", "i_se", "i_sse", "i_sae")),
        ):
            for sk, row in rows.items():
                out.append(
                    {
                        "Update": {
                            "TableName": table,
                            "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                            "UpdateExpression": "SET expires_at = :ttl ADD "
                            + ", ".join(f"{name} :{name}" for name in names),
                            "ExpressionAttributeValues": {
                                ":ttl": ttl,
                                **{f":{name}": {"N": repr(value)} for name, value in zip(names, row, strict=True)},
                            },
                        }
                    }
                )
        for ride_id, pairs in self.traces.items():
            body = [[e.model, e.version, e.role, e.field, e.predicted, e.actual] for e in pairs]
            out.append(
                {
                    "Put": {
                        "TableName": table,
                        "Item": {
                            "pk": {"S": "trace"},
                            "sk": {"S": ride_id},
                            "pairs": {"S": json.dumps(body)},
                            "expires_at": {"N": str(int(now + TRACE_DAYS * 86400))},
                        },
                    }
                }
            )
        return out


def sides(pairs: Sequence[Evaluated]):
    """(challenger, incumbent) pairs of one ride: the shadow's and production's of one model."""
    production = {(e.ride_id, e.model): e for e in pairs if e.role == "production"}
    for e in pairs:
        if e.role == "shadow" and (e.ride_id, e.model) in production:
            yield e, production[(e.ride_id, e.model)]
