"""What a run's rides would cost on AWS, per million rides, from what the local stack counted.

The counts come from the emulators' meters (rides.local.meter: every AWS call of every function,
in the units AWS bills) and the event-source runners (each invocation's measured time, at the
memory Terraform gives the function). The prices are list prices, kept here with the date they
were read: nothing in the report is estimated but the price.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

# On-demand list prices, US East (N. Virginia): the pricing pages of each service.
PRICES_READ = (
    "2026-11-20 (AWS pricing pages, us-east-1; the machine this runs on cannot reach them: check before quoting)"
)
PRICES = {
    "kinesis_put_payload_unit": 0.014 / 1e6,  # per 25 KB of a record
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand write request unit
    "dynamodb_read_unit": 0.125 / 1e6,  # on-demand read request unit
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000166667,  # x86
    "firehose_ingested_gb": 0.029,  # each record rounded up to 5 KB
    "firehose_conversion_gb": 0.018,  # parquet
    "sqs_request": 0.40 / 1e6,  # per 64 KB
}

# Memory each function gets in infra/ (tests/test_costs.py holds these to the Terraform).
MEMORY_MB = {
    "consumer": 1024,
    "decision": 512,
    "evaluation": 512,
}


@dataclass
class Line:
    component: str
    what: str
    cost: float  # USD for the counted rides

    def per_million(self, rides: int) -> float:
        return self.cost / rides * 1e6 if rides else 0.0


def function_kind(name: str) -> str:
    if "decision" in name:
        return "decision"
    if "evaluation" in name:
        return "evaluation"
    if name.endswith("-consumer") or "-consumer-" in name:
        return "consumer"
    return name


def cost_lines(usage: list[dict], invocations: dict[str, dict], archived_streams: set[str]) -> list[Line]:
    """Lines per component from the meters' usage rows (function, service, operation, units)
    and the runners' invocations (function → {"invocations", "seconds", "memory_mb"})."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for row in usage:
        function, service, operation = row["function"], row["service"], row["operation"]
        if service == "dynamodb":
            table = operation.split(":", 1)[1] if ":" in operation else "?"
            key = ("DynamoDB", f"{table} ({function})")
            out[key] += (
                row["write_units"] * PRICES["dynamodb_write_unit"] + row["read_units"] * PRICES["dynamodb_read_unit"]
            )
        elif service == "kinesis" and row["put_payload_units"]:
            stream = operation.split(":", 1)[1] if ":" in operation else "?"
            out[("Kinesis PUT payload units", stream)] += row["put_payload_units"] * PRICES["kinesis_put_payload_unit"]
            if stream in archived_streams:
                gb = row["firehose_bytes"] / 1024**3
                out[("Firehose archive", stream)] += gb * (
                    PRICES["firehose_ingested_gb"] + PRICES["firehose_conversion_gb"]
                )
        elif service == "sqs" and row["sqs_requests"]:
            out[("SQS", function)] += row["sqs_requests"] * PRICES["sqs_request"]
    for function, run in invocations.items():
        gb_seconds = run["seconds"] * run["memory_mb"] / 1024
        out[("Lambda", function)] += (
            gb_seconds * PRICES["lambda_gb_second"] + run["invocations"] * PRICES["lambda_request"]
        )
    return [Line(component, what, cost) for (component, what), cost in sorted(out.items())]


def format_costs(lines: list[Line], rides: int) -> list[str]:
    """The report `make run` prints: per component, per million rides."""
    by_component: dict[str, float] = defaultdict(float)
    for line in lines:
        by_component[line.component] += line.per_million(rides)
    total = sum(by_component.values())
    out = [
        "",
        f"what these {rides:,} rides would cost on AWS, per million rides "
        f"(counted requests, list prices read {PRICES_READ})",
    ]
    for component, cost in sorted(by_component.items(), key=lambda kv: -kv[1]):
        out.append(f"  {component:<28} ${cost:>8.3f}")
        for line in sorted((x for x in lines if x.component == component), key=lambda x: -x.cost):
            out.append(f"      {line.what:<52} ${line.per_million(rides):>8.3f}")
    out.append(
        f"  {'total':<28} ${total:>8.3f}  (shard-hours, the tracking server and the database are per month: README)"
    )
    return out


# -- a run's figures, and provisioned against on-demand streams --------------------------------
KINESIS_PRICES = {
    "shard_hour": 0.015,  # provisioned
    "on_demand_stream_hour": 0.04,
    "on_demand_ingest_gb": 0.08,  # each record rounded up to 1 KB
    "on_demand_retrieval_gb": 0.04,
}
HOURS_A_MONTH = 730
KINESIS_LAYOUT = (
    "provisioned as Terraform lays it out, input n shards of 1,000 records/s, predictions 4n, "
    "completions n, decisions 1, $0.015 a shard-hour and the PUT payload units counted; on demand, "
    "four streams at $0.04 an hour, $0.08 a GB in and $0.04 a GB out to each of the readers in "
    "infra/ (the input's five, two on predictions and on completions, one on decisions), every "
    "record rounded up to 1 KB"
)
# Who reads each stream in infra/ (Lambda mappings and Firehose): on-demand bills every read.
READERS = {"ride-events": 5, "ride-predictions": 2, "ride-completions": 2, "ride-decisions": 1}


def _percentile(values, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))])


def run_figures(result, rate: float | None) -> dict:
    """What `make bench` records of one demo run (rides.local.demo.DemoResult): the cost per
    million rides by component, the requests per ride that make it, and the latencies."""
    rides = result.events_in
    by_component: dict[str, float] = defaultdict(float)
    for line in result.costs:
        by_component[line.component] += line.per_million(rides)
    dynamodb = [u for u in result.usage if u["service"] == "dynamodb"]
    kinesis = [u for u in result.usage if u["service"] == "kinesis" and u["records"]]
    ingest: dict[str, float] = defaultdict(float)
    for u in kinesis:
        ingest[_stream_kind(u["operation"].split(":", 1)[-1])] += u["ingest_kb"] / rides
    invocations = sum(run["invocations"] for run in result.invocations.values())
    return {
        "rides": rides,
        "shards": result.shards,
        "rate": rate,
        "lost": result.lost,
        "decisions": result.decisions,
        "per_million": {k: round(v, 4) for k, v in sorted(by_component.items(), key=lambda kv: -kv[1])},
        "total_per_million": round(sum(by_component.values()), 4),
        "lines": [
            {"component": x.component, "what": x.what, "per_million": round(x.per_million(rides), 4)}
            for x in sorted(result.costs, key=lambda x: -x.cost)
        ],
        "per_ride": {
            "dynamodb_requests": sum(u["requests"] for u in dynamodb) / rides,
            "dynamodb_write_units": sum(u["write_units"] for u in dynamodb) / rides,
            "dynamodb_read_units": sum(u["read_units"] for u in dynamodb) / rides,
            "kinesis_records_put": sum(u["records"] for u in kinesis) / rides,
            "kinesis_put_payload_units": sum(u["put_payload_units"] for u in kinesis) / rides,
            "lambda_invocations": invocations / rides,
            "lambda_gb_seconds": sum(r["seconds"] * r["memory_mb"] / 1024 for r in result.invocations.values()) / rides,
        },
        "ingest_kb_per_ride": dict(sorted(ingest.items())),
        "latency_ms": {
            "prediction_p50": _percentile(result.latencies_ms, 50),
            "prediction_p95": _percentile(result.latencies_ms, 95),
            "decision_p50": _percentile(result.decision_latencies_ms, 50),
            "decision_p95": _percentile(result.decision_latencies_ms, 95),
        },
    }


def _stream_kind(stream: str) -> str:
    """A stream's name without its environment suffix or a run's own prefix."""
    return next((kind for kind in READERS if kind in stream), stream)


def kinesis_month(figures: dict, rides_per_second: float) -> dict[str, float]:
    """The streams' monthly cost at a steady rate, provisioned (Terraform's layout: input n,
    predictions 4n for the three consumers and the shadow, completions n, decisions 1, with n =
    the shards 1,000 records/s each need) and on demand (four streams' hours, data in as
    counted, every reader's data out), from a run's per-ride figures."""
    seconds = HOURS_A_MONTH * 3600
    rides = rides_per_second * seconds
    n = max(1, math.ceil(rides_per_second / 1000))
    shards = n + 4 * n + n + 1
    provisioned = (
        shards * HOURS_A_MONTH * KINESIS_PRICES["shard_hour"]
        + figures["per_ride"]["kinesis_put_payload_units"] * rides * PRICES["kinesis_put_payload_unit"]
    )
    ingest_gb = sum(figures["ingest_kb_per_ride"].values()) * rides / 1024**2
    read_gb = sum(kb * READERS.get(kind, 1) for kind, kb in figures["ingest_kb_per_ride"].items()) * rides / 1024**2
    on_demand = (
        len(READERS) * HOURS_A_MONTH * KINESIS_PRICES["on_demand_stream_hour"]
        + ingest_gb * KINESIS_PRICES["on_demand_ingest_gb"]
        + read_gb * KINESIS_PRICES["on_demand_retrieval_gb"]
    )
    return {"shards": shards, "provisioned": provisioned, "on_demand": on_demand}
