"""The README's cost section is what `make bench-cost` counted, and the arithmetic from a run's
meter rows to its figures is the documented one."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench.cost import README_MARKERS, RESULTS, ROOT, format_cost
from rides.local.costs import PRICES, cost_lines, kinesis_month, run_figures
from rides.readme_section import read_section


def test_the_readme_cost_section_is_the_last_counted_run():
    section = read_section(ROOT / "README.md", README_MARKERS)
    assert section == format_cost(json.loads(RESULTS.read_text()))


def _row(function, service, operation, **units):
    base = dict.fromkeys(
        ("requests", "write_units", "read_units", "put_payload_units", "records", "ingest_kb", "firehose_bytes"), 0
    )
    return {"function": function, "service": service, "operation": operation, **base, **units}


def test_a_runs_figures_per_ride_and_per_million():
    usage = [
        _row("ride-decision-service", "dynamodb", "PutItem:ride-decisions", requests=100, write_units=100),
        _row("ride-evaluation", "dynamodb", "BatchGetItem:ride-decisions", requests=2, read_units=50),
        _row("ride-duration-consumer", "kinesis", "PutRecords:ride-predictions", requests=2, records=10,
             put_payload_units=10, ingest_kb=20, firehose_bytes=10 * 5120),
        _row("(no function)", "kinesis", "PutRecords:ride-events", requests=1, records=100, put_payload_units=100,
             ingest_kb=100),
    ]  # fmt: skip
    invocations = {"ride-decision-service": {"invocations": 4, "seconds": 2.0, "memory_mb": 512}}
    lines = cost_lines(usage, invocations, {"ride-predictions"})
    result = SimpleNamespace(
        events_in=100,
        lost=0,
        decisions=100,
        shards=2,
        costs=lines,
        usage=usage,
        invocations=invocations,
        latencies_ms=[float(i) for i in range(1, 101)],
        decision_latencies_ms=[1000.0] * 100,
    )
    figures = run_figures(result, 50.0)
    dynamodb = 100 * PRICES["dynamodb_write_unit"] + 50 * PRICES["dynamodb_read_unit"]
    assert figures["per_million"]["DynamoDB"] == pytest.approx(dynamodb / 100 * 1e6, abs=1e-4)
    lambda_cost = 2.0 * 0.5 * PRICES["lambda_gb_second"] + 4 * PRICES["lambda_request"]
    assert figures["per_million"]["Lambda"] == pytest.approx(lambda_cost / 100 * 1e6, abs=1e-4)
    assert figures["per_ride"] == {
        "dynamodb_requests": 1.02,
        "dynamodb_write_units": 1.0,
        "dynamodb_read_units": 0.5,
        "kinesis_records_put": 1.1,
        "kinesis_put_payload_units": 1.1,
        "lambda_invocations": 0.04,
        "lambda_gb_seconds": 0.01,
    }
    assert figures["ingest_kb_per_ride"] == {"ride-events": 1.0, "ride-predictions": 0.2}
    assert figures["latency_ms"]["prediction_p50"] == 51.0 and figures["latency_ms"]["decision_p95"] == 1000.0

    # a month at 1,000 rides/s: one input shard (1,000 records/s), 7 shards in Terraform's layout
    month = kinesis_month(figures, 1000)
    rides = 1000 * 730 * 3600
    assert month["shards"] == 7
    assert month["provisioned"] == pytest.approx(7 * 730 * 0.015 + 1.1 * rides * 0.014 / 1e6)
    data_in = 1.2 * rides / 1024**2
    data_out = (1.0 * 5 + 0.2 * 2) * rides / 1024**2
    assert month["on_demand"] == pytest.approx(4 * 730 * 0.04 + data_in * 0.08 + data_out * 0.04)
    assert kinesis_month(figures, 1001)["shards"] == 13  # two input shards
