"""Completions that came before their ride's decision, packed as rows into waiting items under
1 KB (each transactional write or deletion of one costs 2 write units, shared by the ~12-25
completions it holds): the field names and the time they came once an item."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rides.stream.events import OUTCOME_FIELDS, RideCompleted

# A waiting item's size (DynamoDB's: attribute names and values): under 1 KB, each
# (transactional) write or deletion of it costs 2 write units.
WAITING_ITEM_BYTES = 1024


# Besides the rows and the shard's name: pk, version, fields, since, the attribute names, and
# the position in sk (a Kinesis sequence number has up to 56 digits).
WAITING_ITEM_OVERHEAD = 170


@dataclass(frozen=True)
class Waiting:
    """A completion whose ride was not decided when it came."""

    ride_id: str
    outcomes: dict[str, float]
    since: float  # when it first waited

    def to_list(self) -> list:
        return [self.ride_id, self.outcomes, self.since]

    @classmethod
    def from_list(cls, entry: list) -> Waiting:
        ride_id, outcomes, since = entry
        return cls(str(ride_id), {k: float(v) for k, v in outcomes.items()}, float(since))

    @classmethod
    def of(cls, completion: RideCompleted, now: float) -> Waiting:
        return cls(completion.ride_id, dict(completion.outcomes), now)

    def row(self) -> str:
        """Its row in a packed item: ride id and the outcomes in OUTCOME_FIELDS' order."""
        return json.dumps([self.ride_id, *(self.outcomes.get(name) for name in OUTCOME_FIELDS)], separators=(",", ":"))


class Packing:
    """Waiting completions filling items under WAITING_ITEM_BYTES one by one, in order: how
    many items they take is known after each, without packing them all again."""

    def __init__(self, shard: str):
        self.room = WAITING_ITEM_BYTES - WAITING_ITEM_OVERHEAD - len(shard.encode())
        self.groups: list[list[Waiting]] = []
        self.used = self.room

    def _starts_item(self, size: int) -> bool:
        return self.used + size > self.room

    def items_with(self, entry: Waiting) -> int:
        """How many items there would be with `entry` added."""
        return len(self.groups) + self._starts_item(len(entry.row().encode()) + 1)

    def add(self, entry: Waiting) -> None:
        size = len(entry.row().encode()) + 1
        if self._starts_item(size):
            self.groups.append([])
            self.used = 1
        self.groups[-1].append(entry)
        self.used += size


def packed(shard: str, waiting: Sequence[Waiting]) -> list[list[Waiting]]:
    """The completions in groups whose items stay under WAITING_ITEM_BYTES, in order."""
    packing = Packing(shard)
    for entry in waiting:
        packing.add(entry)
    return packing.groups


def pack(waiting: Sequence[Waiting]) -> dict:
    """A waiting item's attributes holding these completions (which came at one time)."""
    return {
        "fields": {"S": json.dumps(list(OUTCOME_FIELDS))},
        "since": {"N": repr(min(w.since for w in waiting))},
        "rows": {"S": "[" + ",".join(w.row() for w in waiting) + "]"},
    }


def unpack(item: dict) -> list[Waiting]:
    """A waiting item's completions, packed or in the form before (`entries`)."""
    if "rows" not in item:
        return [Waiting.from_list(e) for e in json.loads(item["entries"]["S"])]
    fields, since = json.loads(item["fields"]["S"]), float(item["since"]["N"])
    return [
        Waiting(str(ride_id), {f: float(v) for f, v in zip(fields, values, strict=True) if v is not None}, since)
        for ride_id, *values in json.loads(item["rows"]["S"])
    ]
