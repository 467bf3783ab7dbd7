"""The promotion gate: a version goes to @production only when live evaluation shows it is
not worse than what serves, on the same rides.

The candidate runs as the shadow (`rides promote --version N --as shadow`) beside production,
on the same events; the evaluation consumer scores both against the rides' outcomes. The gate
compares the two on the rides both were evaluated on, and refuses (unless forced) when the
shadow has fewer than `min_rides` of them or its RMSE is more than `max_worse` (a fraction)
above production's. Every verdict says why, with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from rides.stream.evaluation.metrics import Summary

MIN_RIDES = 500
MAX_WORSE = 0.02


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    challenger: Summary | None = None
    incumbent: Summary | None = None


def unreadable(exc: Exception, table: str, endpoint: str | None) -> Verdict:
    """The verdict when the evaluations table cannot be read: no evidence, so no promotion
    without --force; and what to do, for the two ways a local stack gets here."""
    where = endpoint or "AWS"
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    text = str(exc)
    how = (
        "the gate reads the table the evaluation writes: set AWS_ENDPOINT_URL_DYNAMODB to where it "
        "runs (on the LocalStack backend, the moto emulator the functions' DynamoDB calls go to)"
    )
    if code == "ResourceNotFoundException":
        reason = (
            f"no live evaluation table {table!r} at {where}: nothing has evaluated a version there "
            f"(deploy infra/'s evaluation function, or locally run it: make run, rides consume --evaluation); {how}"
        )
    elif "is not enabled" in text:
        reason = f"this stack ({where}) has no DynamoDB ({text}); {how}"
    else:
        reason = f"live evaluation cannot be read ({type(exc).__name__}: {exc})"
    return Verdict(False, reason)


def judge(
    store,
    model_name: str,
    candidate: str,
    production: str | None,
    *,
    min_rides: int = MIN_RIDES,
    max_worse: float = MAX_WORSE,
) -> Verdict:
    """May `candidate` replace `production` (versions of `model_name`)? `store`: the evaluations
    (rides.stream.evaluation.store.EvaluationStore)."""
    if production is None:
        return Verdict(True, f"no version of {model_name} serves in production yet: nothing to compare with")
    if candidate == production:
        return Verdict(True, f"version {candidate} already serves in production")
    challenger, incumbent = store.paired(model_name, candidate, production)
    figures = (
        f"on the same {challenger.count:,} rides: RMSE {challenger.rmse:.3f} vs {incumbent.rmse:.3f}, "
        f"MAE {challenger.mae:.3f} vs {incumbent.mae:.3f}, bias {challenger.bias:+.3f} vs {incumbent.bias:+.3f}"
    )
    if challenger.count < min_rides:
        return Verdict(
            False,
            f"version {candidate} has {challenger.count:,} rides evaluated beside production version "
            f"{production}; the gate needs {min_rides:,} (run it as the shadow longer, or --min-rides)",
            challenger,
            incumbent,
        )
    change = challenger.rmse / incumbent.rmse - 1 if incumbent.rmse else 0.0
    if change > max_worse:
        return Verdict(
            False,
            f"version {candidate} is worse than production version {production} {figures} "
            f"({change:+.1%} RMSE; the gate allows {max_worse:+.1%})",
            challenger,
            incumbent,
        )
    return Verdict(
        True,
        f"version {candidate} is {'better than' if change < 0 else 'within the margin of'} production version "
        f"{production} {figures} ({change:+.1%} RMSE)",
        challenger,
        incumbent,
    )
