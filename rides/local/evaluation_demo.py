"""Knowing the model is good, in `make run`: a challenger version (trained on other months) runs
as the shadow beside production, completions are replayed, and the live evaluation is printed
beside the same figures computed offline on the same rides, with the promotion verdict and
this hour's drift."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rides.stream.evaluation.metrics import Summary


@dataclass
class LiveVersusOffline:
    version: str
    role: str
    trained_on: str
    live: Summary
    offline: Summary


@dataclass
class EvaluationDemo:
    versions: list[LiveVersusOffline] = field(default_factory=list)
    verdict: str = ""
    allowed: bool = False
    drift: dict[str, tuple[float, int]] = field(default_factory=dict)
    evaluated_other: dict[str, int] = field(default_factory=dict)  # fare, tip: pairs evaluated


def caught_up(runners) -> bool:
    """Every shard of every runner read to the end and nothing left in its buffer."""
    return all(
        shard.iterator is not None and not shard.buffer and shard.millis_behind == 0
        for runner in runners
        for shard in runner.shards.values()
    ) and all(runner.shards for runner in runners)


def wait_for_evaluations(store, model: str, expected: dict[tuple[str, str], int], timeout: float, runners=()) -> None:
    """Until each (version, role) has its expected number of evaluated rides, or the timeout.
    The table is counted only once the evaluation's runners have caught up: on the emulator a
    query reads the whole table, and polling it would slow the evaluation it waits for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runners and not caught_up(runners):
            time.sleep(0.5)
            continue
        if all(store.count(model, v, r) >= n for (v, r), n in expected.items()):
            return
        time.sleep(5.0)


def compare(store, frame, versions: dict[tuple[str, str], tuple[str, str]], drift_counter=None) -> EvaluationDemo:
    """`versions`: (version, role) → (model URI, what it was trained on). The offline figures
    score every ride of `frame` (the rides that were produced) with the same model files and
    compare with their real durations: live equals offline only if live evaluation counted
    each ride exactly once."""
    from datetime import UTC, datetime

    from rides.models import promotion_gate
    from rides.stream.features import features_from_frame
    from rides.stream.model import load_model

    out = EvaluationDemo()
    features = features_from_frame(frame)
    actual = frame["duration"].to_numpy()
    for (version, role), (uri, trained_on) in versions.items():
        predicted = load_model(uri, version=version).predict(features)
        offline = Summary.of(float(p) - float(a) for p, a in zip(predicted, actual, strict=True))
        live = store.summary("ride-duration", version, role)
        out.versions.append(LiveVersusOffline(version, role, trained_on, live, offline))
    production = next(v for (v, r) in versions if r == "production")
    shadow = next(v for (v, r) in versions if r == "shadow")
    verdict = promotion_gate.judge(store, "ride-duration", shadow, production)
    out.verdict, out.allowed = verdict.reason, verdict.allowed
    for model, field_version in (("ride-fare", "1"), ("ride-tip", "1")):
        out.evaluated_other[model] = store.count(model, field_version, "production")
    if drift_counter is not None:
        hour = datetime.now(UTC).strftime("%Y-%m-%dT%H")
        out.drift = drift_counter.hours([hour]).get(hour, {})
    return out


def format_evaluation(demo: EvaluationDemo) -> list[str]:
    lines = [
        "",
        "live evaluation (ride-completed events joined with each version's predictions)",
        f"{'version':>8} {'role':<10} {'trained on':<18} {'rides':>7} {'live RMSE':>10} {'offline RMSE':>13} "
        f"{'MAE':>6} {'bias':>6}",
    ]
    for v in demo.versions:
        lines.append(
            f"{'v' + v.version:>8} {v.role:<10} {v.trained_on:<18} {v.live.count:>7,} {v.live.rmse:>10.3f} "
            f"{v.offline.rmse:>13.3f} {v.live.mae:>6.2f} {v.live.bias:>+6.2f}"
        )
    lines.append("  also evaluated: " + ", ".join(f"{model} {n:,} rides" for model, n in demo.evaluated_other.items()))
    lines.append(f"promotion gate for the shadow: {'ACCEPT' if demo.allowed else 'REFUSE'}: {demo.verdict}")
    if demo.drift:
        ranked = sorted(demo.drift.items(), key=lambda kv: -kv[1][0])
        lines.append(
            "drift this hour (PSI vs training data): "
            + ", ".join(f"{name} {score:.3f}" for name, (score, _) in ranked[:5])
        )
    return lines
