"""The decision service: rules (what a ride's predictions mean), store (a ride's state in
DynamoDB, changed only by conditional writes) and service (the stream and the sweep)."""

from rides.stream.decision.rules import DEFAULT_RULES, Rule, evaluate, load_rules
from rides.stream.decision.service import (
    DEFAULT_REQUIRED_MODELS,
    DecisionConfig,
    DecisionReport,
    SweepResult,
    process_predictions,
    sweep,
)
from rides.stream.decision.store import DUE_INDEX, INDEX_SHARDS, DecisionStore, RideState
from rides.stream.failures import StoreUnavailable

__all__ = [
    "DEFAULT_REQUIRED_MODELS",
    "DEFAULT_RULES",
    "DUE_INDEX",
    "INDEX_SHARDS",
    "DecisionConfig",
    "DecisionReport",
    "DecisionStore",
    "RideState",
    "Rule",
    "StoreUnavailable",
    "SweepResult",
    "evaluate",
    "load_rules",
    "process_predictions",
    "sweep",
]
