"""What a run's rides would cost on AWS, per million rides, from what the local stack counted.

The counts come from the emulators' meters (rides.local.meter: every AWS call of every function,
in the units AWS bills) and the event-source runners (each invocation's measured time, at the
memory Terraform gives the function). The prices are list prices, kept here with the date they
were read: nothing in the report is estimated but the price.
"""

from __future__ import annotations

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
