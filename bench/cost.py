"""What a ride costs on AWS, counted (`make bench-cost`, part of `make bench`): `make run`'s
demo as it runs, then the same demo at 1, 4 and 16 input shards with the same rides per shard
per second. Every figure comes from the emulator's meter and the runners' invocation times
(rides.local.costs); the prices are list prices with the date they were read. Writes
bench/cost.json and the README's cost section between its markers."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "cost.json"
README_MARKERS = ("<!-- cost:start -->\n", "<!-- cost:end -->")
MAKE_RUN = {"events": 5000, "rate": 500.0, "shards": 2}  # the Makefile's EVENTS and RATE
SCALE_SHARDS = (1, 4, 16)
SCALE_RIDES_PER_SHARD_SECOND = 25.0
SCALE_RIDES = 1600
STEADY_RATES = (10, 100, 1000, 5000)  # rides/s, for provisioned against on-demand streams


def _one_run(events: int, rate: float, shards: int, env: dict | None = None) -> dict:
    """In a fresh process: the demo starts its own emulator and points the environment at it."""
    os.environ.update(env or {})
    from rides.local.costs import run_figures
    from rides.local.demo import run_demo

    result = run_demo(events, rate=rate, shards=shards, progress=False, timeout=900)
    figures = run_figures(result, rate)
    evaluation = result.evaluation
    figures["live_equals_offline"] = bool(evaluation) and all(
        v.live.count == v.offline.count and f"{v.live.rmse:.6f}" == f"{v.offline.rmse:.6f}" for v in evaluation.versions
    )
    return figures


def measure(events: int, rate: float, shards: int, env: dict | None = None) -> dict:
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        figures = pool.apply(_one_run, (events, rate, shards, env))
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-scale", action="store_true", help="only make run's configuration")
    parser.add_argument(
        "--only-window", action="store_true", help="only the other decision window's run; the rest as last measured"
    )
    args = parser.parse_args()
    from rides.settings import DECISION_BATCHING_WINDOW_SECONDS

    last = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    if args.only_window:
        results = {**last, **results}
    else:
        print(f"make run's demo: {MAKE_RUN} ...", flush=True)
        results["make_run"] = measure(MAKE_RUN["events"], MAKE_RUN["rate"], MAKE_RUN["shards"])
    # The decision mapping's batching window trades latency for writes: the same demo with a
    # window one second longer than the default, right after the default's run.
    other = DECISION_BATCHING_WINDOW_SECONDS + 1
    print(f"make run's demo with a {other} s decision batching window ...", flush=True)
    window = {"RIDES_DECISION_BATCHING_WINDOW_SECONDS": str(other)}
    results["decision_window"] = {"default_s": DECISION_BATCHING_WINDOW_SECONDS, "other_s": other}
    results["decision_window_other"] = measure(MAKE_RUN["events"], MAKE_RUN["rate"], MAKE_RUN["shards"], window)
    results.pop("decision_window_1s", None)  # the runs before the default was 1 s
    if not (args.no_scale or args.only_window):
        results["scale"] = []
        for shards in SCALE_SHARDS:
            rate = SCALE_RIDES_PER_SHARD_SECOND * shards
            print(f"{shards} input shards, {rate:.0f} rides/s ...", flush=True)
            results["scale"].append(measure(SCALE_RIDES, rate, shards))
    elif "scale" in last:  # keep the last scale runs
        results["scale"] = last["scale"]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print(format_cost(results))


def write_readme(results: dict, readme: Path = ROOT / "README.md") -> None:
    from rides.readme_section import write_section

    write_section(readme, README_MARKERS, format_cost(results))


def _ms(value) -> str:
    return "–" if value is None else f"{value / 1000:.1f} s"


def format_cost(r: dict) -> str:
    """The README's cost section, from bench/cost.json only."""
    from rides.local.costs import KINESIS_LAYOUT, PRICES_READ, kinesis_month

    m = r["make_run"]
    per = m["per_ride"]
    lines = [
        f"Counted by `make bench-cost` on {r['date']} ({r['machine']}): `make run`'s demo, "
        f"{m['rides']:,} real rides at {m['rate']:.0f}/s on {m['shards']} input shards, every AWS call its "
        "functions made metered by the emulator in the units AWS bills, and each invocation's measured time "
        f"at Terraform's memory. List prices read {PRICES_READ}. "
        f"Lost: {m['lost']}; decisions: {m['decisions']:,}; live evaluation equal to offline: "
        f"{'yes' if m['live_equals_offline'] else 'NO'}.",
        "",
        "| per million rides | $ |",
        "|---|---|",
    ]
    for component, cost in m["per_million"].items():
        lines.append(f"| {component} | {cost:.2f} |")
    lines.append(f"| **total** | **{m['total_per_million']:.2f}** |")
    lines += [
        "",
        "The biggest lines:",
        "",
        "| where (table or stream, and the function) | $ per million rides |",
        "|---|---|",
    ]
    for line in m["lines"][:8]:
        lines.append(f"| {line['component']}: {line['what']} | {line['per_million']:.3f} |")
    lines += [
        "",
        f"Per ride: {per['dynamodb_requests']:.2f} DynamoDB requests ({per['dynamodb_write_units']:.2f} write "
        f"and {per['dynamodb_read_units']:.2f} read units), {per['kinesis_records_put']:.2f} Kinesis records "
        f"put ({per['kinesis_put_payload_units']:.2f} PUT payload units), "
        f"{per['lambda_invocations'] * 1000:.1f} Lambda invocations per 1,000 rides, "
        f"{per['lambda_gb_seconds'] * 1000:.2f} GB-ms of Lambda time.",
    ]
    if r.get("decision_window_other"):
        windows = r["decision_window"]
        lines += [
            "",
            "The decision mapping's batching window (Terraform's `decision_batching_window_seconds`), the same "
            "demo run after run: a ride's three predictions come from three consumers polling on their own, and "
            "those that share the decision service's batch are decided with one write.",
            "",
            "| decision window | $ per million | DynamoDB write units per ride | ride → decision p50 / p95 |",
            "|---|---|---|---|",
        ]
        for label, run in (
            (f"{windows['default_s']} s (the default, the consumers' window)", m),
            (f"{windows['other_s']} s", r["decision_window_other"]),
        ):
            lat = run["latency_ms"]
            lines.append(
                f"| {label} | {run['total_per_million']:.2f} | {run['per_ride']['dynamodb_write_units']:.2f} | "
                f"{_ms(lat['decision_p50'])} / {_ms(lat['decision_p95'])} |"
            )
    if r.get("scale"):
        lines += [
            "",
            f"At scale: the same demo ({r['scale'][0]['rides']:,} rides) with "
            f"{r['scale'][0]['rate'] / r['scale'][0]['shards']:.0f} rides/s per input shard, so each shard's batches "
            "stay the size "
            "they would be; latency is this two-core machine's, where every function and the emulator share "
            "the cores, not Lambda's.",
            "",
            "| input shards | rides/s | $ per million | DynamoDB requests per ride | Lambda invocations "
            "per 1,000 rides | ride → decision p50 / p95 | lost |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in r["scale"]:
            lat = s["latency_ms"]
            lines.append(
                f"| {s['shards']} | {s['rate']:.0f} | {s['total_per_million']:.2f} | "
                f"{s['per_ride']['dynamodb_requests']:.2f} | {s['per_ride']['lambda_invocations'] * 1000:.1f} | "
                f"{_ms(lat['decision_p50'])} / {_ms(lat['decision_p95'])} | {s['lost']} |"
            )
    lines += [
        "",
        f"The streams a month at a steady rate, from the KB per ride counted above ({KINESIS_LAYOUT}):",
        "",
        "| rides/s | provisioned (shards) | on-demand |",
        "|---|---|---|",
    ]
    for rate in STEADY_RATES:
        k = kinesis_month(m, rate)
        provisioned, on_demand = f"${k['provisioned']:,.0f} ({k['shards']})", f"${k['on_demand']:,.0f}"
        if k["provisioned"] <= k["on_demand"]:  # the cheaper in bold
            provisioned = f"**{provisioned}**"
        else:
            on_demand = f"**{on_demand}**"
        lines.append(f"| {rate:,} | {provisioned} | {on_demand} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
