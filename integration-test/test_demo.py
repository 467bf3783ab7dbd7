"""`make run` end to end, small: every ride predicted and decided, the combined mode's answers,
and live evaluation equal to the offline figures on the same rides, with the gate's verdict."""

from __future__ import annotations

from rides.local.demo import format_summary, run_demo


def test_the_demo_closes_the_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("RIDES_HOME", str(tmp_path))
    result = run_demo(600, rate=None, time_scale=600.0, progress=False, timeout=300)
    text = format_summary(result)
    assert result.lost == 0 and result.decisions == 600, text
    # the shadow's predictions are there, and no decision counts them
    assert result.predictions_by_model["ride-duration (shadow)"] == 600
    evaluation = result.evaluation
    for version in evaluation.versions:
        # every produced ride counted exactly once: live and offline over the same 600 rides
        assert version.live.count == version.offline.count == 600, text
        # live evaluation is the offline computation on the same rides, to the printed precision
        assert f"{version.live.rmse:.3f}" == f"{version.offline.rmse:.3f}", text
    assert evaluation.evaluated_other == {"ride-fare": 600, "ride-tip": 600}
    assert not evaluation.allowed and "is worse than production version 1" in evaluation.verdict  # 2023 vs 2021
    assert evaluation.drift and all(score == score for score, _ in evaluation.drift.values())
    # the combined mode: quick answers at once, the stream's answer and the decision after
    web = result.web
    assert web.unauthenticated_status == 401
    assert all(r.quick is not None and r.enhanced is not None and r.decision for r in web.rides), text
    assert all(r.quick_ms < r.enhanced_ms <= r.decision_ms for r in web.rides)
