"""Decision rules: which predictions of a ride raise which flags.

A ride with a flag is decided `review`, otherwise `accept`. Rules come from DECISION_RULES
(a JSON list, or a path to one) or the defaults below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_RULES = (
    {"flag": "long_ride", "type": "max", "field": "ride_duration", "value": 45},
    {
        "flag": "fare_per_minute_out_of_range",
        "type": "ratio_range",
        "numerator": "fare_amount",
        "denominator": "ride_duration",
        "min": 0.4,
        "max": 4.0,
    },
    {
        "flag": "tip_share_out_of_range",
        "type": "ratio_range",
        "numerator": "tip_amount",
        "denominator": "fare_amount",
        "min": 0.0,
        "max": 0.4,
    },
)


@dataclass(frozen=True)
class Rule:
    """`max`/`min`: flag when `field` is above/below `value`; `ratio_range`: flag when
    numerator / denominator falls outside [min, max]. Missing fields: not evaluated."""

    flag: str
    type: str
    field: str | None = None
    value: float | None = None
    numerator: str | None = None
    denominator: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self):
        needs = {
            "max": ("field", "value"),
            "min": ("field", "value"),
            "ratio_range": ("numerator", "denominator", "min", "max"),
        }
        if self.type not in needs:
            raise ValueError(f"rule {self.flag!r}: type must be one of {sorted(needs)}, got {self.type!r}")
        missing = [name for name in needs[self.type] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"rule {self.flag!r} ({self.type}) needs {missing}")

    def fires(self, values: Mapping[str, float]) -> bool | None:
        """True/False, or None when the rule cannot be evaluated (a prediction is missing)."""
        if self.type in ("max", "min"):
            if self.field not in values:
                return None
            value = values[self.field]
            return value > self.value if self.type == "max" else value < self.value
        if self.numerator not in values or self.denominator not in values or values[self.denominator] == 0:
            return None
        ratio = values[self.numerator] / values[self.denominator]
        return not (self.min <= ratio <= self.max)


def load_rules(spec: str | None) -> tuple[Rule, ...]:
    """DECISION_RULES: a JSON list of rules, or a path to a JSON file; default DEFAULT_RULES."""
    if not spec:
        return tuple(Rule(**rule) for rule in DEFAULT_RULES)
    text = open(spec).read() if not spec.lstrip().startswith("[") else spec  # noqa: SIM115
    return tuple(Rule(**rule) for rule in json.loads(text))


def evaluate(values: Mapping[str, float], rules: Sequence[Rule]) -> tuple[list[str], list[str]]:
    """→ (flags raised, rules not evaluated for lack of a prediction)."""
    flags, skipped = [], []
    for rule in rules:
        fired = rule.fires(values)
        if fired is None:
            skipped.append(rule.flag)
        elif fired:
            flags.append(rule.flag)
    return flags, skipped
