"""The fault-injection run, small (the full one is `make chaos`): real rides and malformed
records while the emulator throttles, drops streams and queues, and the consumers and the
decision service are killed with SIGKILL and restarted. Every record must be accounted for,
and after `rides redrive` nothing may wait anywhere."""

from __future__ import annotations

from rides.local.chaos import FAULT_PLANS, ChaosSettings, run_chaos


def test_every_record_ends_in_exactly_one_known_place_under_faults_and_kills(tmp_path):
    settings = ChaosSettings(rides=1_000, produce_seconds=25, fault_seconds=2.5, kill_every=(2.0, 5.0), seed=11)
    result = run_chaos(settings, tmp_path / "chaos", say=lambda text: print(f"==> {text}"))
    print(result.format())  # the ledger, in the test log

    assert result.faults == [label for label, _ in FAULT_PLANS]
    assert {"dynamodb_throttle", "throttled_entry_count", "missing_stream:ride-predictions"} <= set(result.fault_hits)
    assert sum(result.kills.values()) >= 3

    before, after = result.before_redrive, result.after_redrive
    assert before.accounted, before.format()  # lost: nothing; failed batches are a known place
    assert after.complete, after.format()
    assert (after.rides, after.malformed, after.decided, after.dead_lettered) == (1_000, 8, 1_000, 8)
    assert all(after.predicted[model] == 1_000 for model in after.models)
