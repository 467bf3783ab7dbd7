"""`make bench`: the consumer's speed, cold start, memory and package size, and a soak run.

Everything runs against real local processes (the emulator serves moto one request at a
time). Results go to stdout and bench/results.md. Numbers vary with the machine's load: the
table says what was measured here, and no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.md"
BATCH = 10_000


def lambda_event(frame) -> dict:
    """A 10,000-record Lambda event of real rides, built the way the local runner builds it."""
    from rides.local.producer import ride_events
    from rides.stream.lambda_event import kinesis_event_record

    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/ride-events"
    now = time.time()
    return {
        "Records": [
            kinesis_event_record(
                {"PartitionKey": key, "SequenceNumber": f"{i:056d}", "Data": data, "ApproximateArrivalTimestamp": now},
                "shardId-000000000000",
                arn,
                "us-east-1",
            )
            for i, (key, data) in enumerate(ride_events(frame), start=1)
        ]
    }


def aggregated_event(frame, max_bytes: int) -> dict:
    """The same rides as `lambda_event`, as a KPL producer sends them: aggregated into records of
    up to `max_bytes` (the KPL's default 50 KiB holds ~250 rides)."""
    from rides.local.producer import ride_events
    from rides.stream.kpl import pack
    from rides.stream.lambda_event import kinesis_event_record

    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/ride-events"
    now = time.time()
    return {
        "Records": [
            kinesis_event_record(
                {"PartitionKey": key, "SequenceNumber": f"{i:056d}", "Data": data, "ApproximateArrivalTimestamp": now},
                "shardId-000000000000",
                arn,
                "us-east-1",
            )
            for i, (key, data, _) in enumerate(pack(list(ride_events(frame)), max_bytes), start=1)
        ]
    }


def shard_throughput(frame, seconds: float = 8.0) -> dict:
    """Rides a second one shard takes, plain and KPL-aggregated, through rides.producer into an
    emulator that enforces Kinesis's per-shard limits (1,000 records/s, 1 MiB/s): sent as fast
    as the shard takes them, counted over the last `seconds - 2` (the first two fill and drain
    the shard's one-second burst)."""
    from rides.local.backend import LOCAL_ENV, clients, stop_process
    from rides.local.producer import ride_events
    from rides.local.stack import start_emulator
    from rides.producer import RideProducer

    events = [data for _, data in ride_events(frame)]
    info, proc = start_emulator(
        parent_pid=os.getpid(), max_lifetime=600, log_path=Path(tempfile.mkdtemp()) / "e.log", aws_limits=True
    )
    out = {}
    try:
        kinesis = clients({**LOCAL_ENV, "AWS_ENDPOINT_URL": info.endpoint})["kinesis"]
        for name, aggregate in (("plain", False), ("aggregated", True)):
            stream = f"throughput-{name}"
            kinesis.create_stream(StreamName=stream, ShardCount=1)
            producer = RideProducer(stream, kinesis=kinesis, aggregate=aggregate, concurrency=1)
            chunk = 2500 if aggregate else 500
            started, sent, counted_from, counted = time.monotonic(), 0, None, 0
            while time.monotonic() - started < seconds:
                if counted_from is None and time.monotonic() - started >= 2.0:
                    counted_from, counted = time.monotonic(), 0
                batch = [events[(sent + i) % len(events)] for i in range(chunk)]
                report = producer.send(batch)
                sent += report.sent
                counted += report.sent
                if report.unsent:
                    raise RuntimeError(f"{len(report.unsent)} rides not sent: {report.unsent[0]}")
            elapsed = time.monotonic() - counted_from
            out[name] = {"rides_per_s": counted / elapsed, "kinesis_records": report.kinesis_records}
        out["ride_bytes"] = statistics.mean(len(e) for e in events)
    finally:
        stop_process(info.pid)
        proc.wait(timeout=15)
    return out


def save_models(tmp: Path, trained) -> tuple[Path, Path]:
    import mlflow.onnx
    import mlflow.sklearn

    onnx_dir, sk_dir = tmp / "onnx", tmp / "sklearn"
    mlflow.onnx.save_model(trained.onnx_model, str(onnx_dir), metadata={"rides_features": list(trained.features)})
    mlflow.sklearn.save_model(trained.baseline, str(sk_dir), serialization_format="cloudpickle")
    return onnx_dir, sk_dir


def upload(s3, local: Path, bucket: str, prefix: str) -> str:
    for file in local.rglob("*"):
        if file.is_file():
            s3.upload_file(str(file), bucket, f"{prefix}/{file.relative_to(local)}")
    return f"s3://{bucket}/{prefix}"


FAST_REPEATS = 15  # batches timed after the warm-up, ours and the course reference's alike
PUBLISH_RECORDS, PUBLISH_REPEATS = 2_000, 5  # end to end: the reference's put_record per record is slow


def probe(module_args: list[str], env: dict, count: int | None = None) -> dict:
    """A probe's per-batch times (bench.probes: a fresh process, one warm-up, then timed) as
    records/s (or `count` things a batch: the rides of aggregated records): the median, the best
    and the worst."""
    out = subprocess.run(
        [sys.executable, "-m", *module_args], env=env, capture_output=True, text=True, cwd=ROOT, check=True
    )
    run = json.loads(out.stdout.strip().splitlines()[-1])
    rates = sorted((count or run["records"]) / t for t in run["times"])
    return {"median": statistics.median(rates), "best": rates[-1], "worst": rates[0], "batches": len(rates)}


def fast_path(
    env: dict, event_file: Path, *, publish: bool = False, records: int | None = None, rides: int | None = None
) -> dict:
    """Decode → validate → predict → encode (→ publish) of our handler, in its probe; `rides`:
    how many rides the event's (aggregated) records hold."""
    args = ["bench.probes.fast_path", str(event_file), str(PUBLISH_REPEATS if publish else FAST_REPEATS)]
    env = {**env, "DRY_RUN": "false" if publish else "true", "AWS_LAMBDA_FUNCTION_NAME": "rides-consumer-bench"}
    return probe([*args, *([str(records)] if records else [])], env, count=rides)


def reference(env: dict, model_dir: Path, event_file: Path, *, stream: str | None = None) -> dict:
    """The course's handler on the same event, in a probe of the same shape."""
    args = ["bench.probes.reference", str(model_dir), str(event_file)]
    if stream:
        return probe([*args, str(PUBLISH_REPEATS), "--publish", stream, "--records", str(PUBLISH_RECORDS)], env)
    return probe([*args, str(FAST_REPEATS)], env)


def cold_start(env: dict, event_file: Path, runs: int = 3) -> dict:
    results = []
    for _ in range(runs):
        cache = tempfile.mkdtemp()
        out = subprocess.run(
            [sys.executable, "-m", "bench.probes.cold_start", str(event_file)],
            env={
                **env,
                "RIDES_MODEL_CACHE": cache,
                # Publishing for real (to the emulator): the path Lambda runs.
                "DRY_RUN": "false",
                # Set by Lambda's runtime: the handler loads the model at import (init phase).
                "AWS_LAMBDA_FUNCTION_NAME": "rides-consumer-bench",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "POWERTOOLS_METRICS_DISABLED": "true",
            },
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        shutil.rmtree(cache, ignore_errors=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def package_size(requirements: list[str]) -> float:
    target = Path(tempfile.mkdtemp())
    try:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes", "--target", str(target)]
        for req in requirements:
            command += ["-r", str(ROOT / "lambda_function" / req)]
        subprocess.run(command, check=True, capture_output=True)
        return sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(target, ignore_errors=True)


def soak(env_stack, names, n_events: int) -> dict:
    """n real events through the emulator and the runner; count what comes out."""
    from lambda_function.handler import lambda_handler
    from rides.data import read_trips
    from rides.local.producer import produce, ride_events
    from rides.local.reader import collect_predictions
    from rides.local.runner import EventSourceRunner
    from rides.operate.stream_reader import StreamReader

    frame = read_trips("2021-02")
    repeats = -(-n_events // len(frame))
    kinesis = boto3.client("kinesis")
    stop = threading.Event()
    checkpoints = Path(tempfile.mkdtemp()) / "checkpoints.json"
    runner = EventSourceRunner(
        names.input_stream, handler=lambda_handler, function_name="bench", checkpoint_path=checkpoints
    )
    lags: list[int] = []
    thread = threading.Thread(
        target=runner.run,
        kwargs={"until": stop.is_set, "report_every_s": 1.0, "report": lambda s: lags.append(s["lag_ms"])},
        daemon=True,
    )
    started = time.monotonic()
    thread.start()
    events = (ev for r in range(repeats) for ev in ride_events(frame, first_id=1 + r * len(frame)))
    produced = produce(
        kinesis, names.input_stream, (e for _, e in zip(range(n_events), events, strict=False)), progress=False
    )
    reader = StreamReader(kinesis, names.predictions_stream)
    seen = collect_predictions(reader, {str(i) for i in range(1, n_events + 1)}, timeout=600)
    seconds = time.monotonic() - started
    stop.set()
    thread.join(timeout=10)
    return {
        "events": n_events,
        "produced": produced.sent,
        "predicted_rides": len(seen),
        "lost": n_events - len(seen),
        "seconds": seconds,
        "events_per_s": n_events / seconds,
        "max_lag_ms": max(lags, default=0),
    }


def batch_memory(model_dir: Path, month: str, copies: int) -> tuple[int, int]:
    """(rows, MB of peak memory above the process's baseline) for `copies` of a month."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.probes.scoring_memory", str(model_dir), month, str(copies)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "RIDES_HOME": tempfile.mkdtemp()},
    )
    rows, megabytes = out.stdout.split()
    return int(rows), int(megabytes)


def batch_job(model_dir: Path, month: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.probes.scoring_job", str(model_dir), month],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "RIDES_HOME": tempfile.mkdtemp()},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def evaluation(model_dir: Path, month: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.probes.evaluation", str(model_dir), month],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "RIDES_HOME": tempfile.mkdtemp(), "POWERTOOLS_LOG_LEVEL": "WARNING"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--soak-events", type=int, default=int(os.environ.get("BENCH_SOAK_EVENTS", 100_000)))
    parser.add_argument("--skip-size", action="store_true", help="Skip the pip install of the Lambda deps.")
    args = parser.parse_args()

    from rides.data import read_trips
    from rides.local.backend import LOCAL_ENV, stop_process
    from rides.local.stack import create_resources, start_emulator
    from rides.models.training import train
    from rides.settings import StackNames

    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    }
    tmp = Path(tempfile.mkdtemp())
    print("training (2021-01 → 2021-02) ...", flush=True)
    started = time.perf_counter()
    trained = train(read_trips("2021-01"), read_trips("2021-02"))
    results["train_seconds"] = time.perf_counter() - started
    results["rmse"] = {"baseline": trained.baseline_metrics.rmse, "ours": trained.metrics.rmse}
    onnx_dir, sk_dir = save_models(tmp, trained)
    print("batch scoring job (one core) ...", flush=True)
    from rides.data import DataUnavailable, month_path

    try:
        month_path("2023-03", progress=False)
        batch_month = "2023-03"
    except DataUnavailable:
        batch_month = "2023-02"  # shipped
    results["batch"] = {"month": batch_month, **batch_job(onnx_dir, batch_month)}
    results["batch"]["memory"] = [batch_memory(onnx_dir, batch_month, copies) for copies in (1, 8)]
    print("evaluation consumer and the shadow's cost (one core) ...", flush=True)
    results["evaluation"] = evaluation(onnx_dir, "2021-02")
    print("web service vs Flask + gunicorn ...", flush=True)
    from bench import web

    try:
        results["web"] = web.run(onnx_dir)
    except RuntimeError as exc:  # wrk missing and not installable: say so, measure the rest
        print(f"web benchmark skipped: {exc}", flush=True)
    frame = read_trips("2021-02").head(BATCH)
    event = lambda_event(frame)
    event_file = tmp / "event.json"
    event_file.write_text(json.dumps(event))
    aggregated_file = tmp / "aggregated-event.json"
    aggregated_file.write_text(json.dumps(aggregated_event(frame, 51_200)))
    print("one shard's rides/s, plain and KPL-aggregated, with Kinesis's limits enforced ...", flush=True)
    results["shard_throughput"] = shard_throughput(frame)

    # Our code's speed: the emulator's Kinesis limits off, as in every run before they existed
    # (publishing 10,000 predictions in one burst would otherwise measure the shards' quota).
    info, proc = start_emulator(
        parent_pid=os.getpid(), max_lifetime=3600, log_path=tmp / "emulator.log", aws_limits=False
    )
    try:
        env = {**LOCAL_ENV, "AWS_ENDPOINT_URL": info.endpoint}
        os.environ.update(env)
        names = StackNames()
        created = create_resources(env, names)
        s3 = boto3.client("s3")
        onnx_uri = upload(s3, onnx_dir, names.model_bucket, "bench/onnx")
        sk_uri = upload(s3, sk_dir, names.model_bucket, "bench/sklearn")
        os.environ.update(
            {
                "MODEL_URI": onnx_uri,
                "PREDICTIONS_STREAM_NAME": names.predictions_stream,
                "DEAD_LETTER_QUEUE_URL": created[f"sqs:{names.dead_letter_queue}"],
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )

        # Both handlers the same way: a fresh process each, the same event, one warm-up, the
        # same number of timed batches; the median is the figure, best and worst beside it.
        print("fast path (decode → validate → predict → encode, no publish) ...", flush=True)
        results["fast_path"] = fast_path({**os.environ}, event_file)
        print("fast path on KPL-aggregated records (the same rides in 50 KiB aggregates) ...", flush=True)
        results["fast_path_aggregated"] = fast_path({**os.environ}, aggregated_file, rides=BATCH)
        print("course reference handler (pyfunc predict per record), the same way ...", flush=True)
        results["reference"] = reference({**os.environ}, sk_dir, event_file)

        print("end to end, publishing to the emulator, both handlers ...", flush=True)
        results["end_to_end"] = fast_path({**os.environ}, event_file, publish=True, records=PUBLISH_RECORDS)
        boto3.client("kinesis").create_stream(StreamName="bench-reference", ShardCount=1)
        results["reference_publish"] = reference({**os.environ}, sk_dir, event_file, stream="bench-reference")

        print("cold start (fresh interpreter) ...", flush=True)
        child_env = {**os.environ}
        results["cold_start_onnx"] = cold_start({**child_env, "MODEL_URI": onnx_uri}, event_file)
        results["cold_start_sklearn"] = cold_start({**child_env, "MODEL_URI": sk_uri}, event_file)

        if args.soak_events:
            print(f"soak: {args.soak_events:,} events through the stack ...", flush=True)
            os.environ["DRY_RUN"] = "false"
            from dataclasses import replace

            soak_names = replace(names, input_stream="soak-events", predictions_stream="soak-predictions")
            create_resources(env, soak_names)
            os.environ["PREDICTIONS_STREAM_NAME"] = soak_names.predictions_stream
            results["soak"] = soak(env, soak_names, args.soak_events)
    finally:
        stop_process(info.pid)
        proc.wait(timeout=15)

    if not args.skip_size:
        print("Lambda dependency size (pip install --target) ...", flush=True)
        results["package_mb"] = package_size(["requirements.lock.txt"])
        results["package_sklearn_mb"] = package_size(["requirements.lock.txt", "requirements-sklearn.lock.txt"])
    report = format_results(results)
    RESULTS.write_text(report)
    from rides.readme_section import write_section

    write_section(ROOT / "README.md", ("<!-- bench:start -->\n", "<!-- bench:end -->"), report)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    print(report)


def _rate(run: dict, unit: str = "records/s") -> str:
    """A probe's figure: the median batch, the best and the worst beside it."""
    return f"{run['median']:,.0f} {unit} (best {run['best']:,.0f}, worst {run['worst']:,.0f})"


def format_results(r: dict) -> str:
    cs_onnx, cs_sk = r["cold_start_onnx"], r["cold_start_sklearn"]
    rows = [
        (
            f"decode → validate → predict → encode ({BATCH:,}-record batch, no publish; median of "
            f"{r['fast_path']['batches']} batches)",
            _rate(r["fast_path"]),
            "≥ 100,000 records/s",
            _rate(r["reference"]),
        ),
        (
            "… the same rides KPL-aggregated (50 KiB records, ~250 rides each)",
            _rate(r["fast_path_aggregated"], "rides/s"),
            "",
            "",
        ),
        (
            f"end to end, publishing to the moto emulator ({PUBLISH_RECORDS:,} records; median of "
            f"{r['end_to_end']['batches']})",
            _rate(r["end_to_end"]),
            "≥ 3,000 records/s",
            _rate(r["reference_publish"]),
        ),
        (
            "cold start: import, fetch model from S3, first invocation and its publish (ONNX model)",
            f"{cs_onnx['cold_start_s']:.2f} s",
            "≤ 1 s",
            "",
        ),
        (
            "cold start, Zoomcamp-style sklearn model",
            f"{cs_sk['cold_start_s']:.2f} s",
            "≤ 2.5 s",
            "",
        ),
        (
            "peak memory, fast path: cold start and first invocation",
            f"{cs_onnx['rss_cold_mb']:.0f} MB",
            "≤ 128 MB",
            "",
        ),
        (
            "peak memory, fast path, after a 10,000-record batch (published)",
            f"{cs_onnx['rss_10k_batch_mb']:.0f} MB",
            "≤ 128 MB",
            "",
        ),
        (
            "peak memory, sklearn model, after a 10,000-record batch",
            f"{cs_sk['rss_10k_batch_mb']:.0f} MB",
            "",
            "",
        ),
    ]
    if "package_mb" in r:
        rows += [
            ("Lambda runtime deps, `pip install --target`", f"{r['package_mb']:.0f} MB", "≤ 250 MB", ""),
            ("… with scikit-learn (WITH_SKLEARN=true)", f"{r['package_sklearn_mb']:.0f} MB", "", ""),
        ]
    rows.append(("training one month (2021-01, validate on 2021-02)", f"{r['train_seconds']:.1f} s", "≤ 60 s", ""))
    lines = [f"Measured on {r['machine']}.", "", "| what | ours | goal | course reference |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in filter(None, rows)]
    lines += [
        "",
        "Both handlers ran the same way: a fresh process each, the same event, one warm-up batch, then the "
        "same number of timed batches. The course reference's cold start and memory are not measured here "
        "(an empty cell: nothing in this table is quoted). Cold start here is a fresh interpreter on this "
        "machine (warm page cache, the model on the loopback emulator), not a Lambda cold start, which adds "
        "the sandbox and the image or zip download.",
    ]
    if "shard_throughput" in r:
        t = r["shard_throughput"]
        lines += [
            "",
            "One shard, the emulator enforcing Kinesis's limits (1,000 records/s and 1 MiB/s a shard), rides "
            f"(~{t['ride_bytes']:.0f} bytes each) sent through `rides.producer` as fast as the shard takes them:",
            "",
            "| producer | rides/s a shard takes |",
            "|---|---|",
            f"| plain records | {t['plain']['rides_per_s']:,.0f} |",
            f"| KPL-aggregated (`aggregate=True`, 50 KiB records) | {t['aggregated']['rides_per_s']:,.0f} |",
        ]
    if "batch" in r:
        b = r["batch"]
        lines += [
            "",
            f"Batch scoring, {b['month']} ({b['rows']:,} rows), one core, parquet read → predict → write:",
            "",
            "| what | rows/s | goal |",
            "|---|---|---|",
            f"| `rides score` to parquet | {b['parquet']:,.0f} | ≥ 200,000 |",
            f"| `rides score` to parquet + SQLite upsert | {b['parquet_sqlite']:,.0f} | |",
        ]
        if "from_db_sqlite" in b:
            lines += [
                f"| `rides score --from-db`, SQLite rides table → SQLite predictions | {b['from_db_sqlite']:,.0f} | |",
                f"| `rides load` of the month into the SQLite rides table | {b['db_load']:,.0f} | |",
            ]
        lines += [
            f"| row-by-row loop, same model (one predict per ride) | {b['row_by_row']:,.0f} | |",
        ]
        if "memory" in b:
            (rows1, mb1), (rows8, mb8) = b["memory"]
            lines += [
                "",
                f"Memory grows far slower than the input (record batches): scoring {rows1:,} rows took {mb1} MB above "
                f"the process's baseline, "
                f"{rows8:,} rows (the month 8 times over) {mb8} MB.",
            ]
    if "evaluation" in r:
        e = r["evaluation"]
        lines += [
            "",
            f"Live evaluation, one core, DynamoDB answered in memory (our code per record): "
            f"{e['evaluation_records_per_s']:,.0f} completions/s over {e['records']:,} completions, each joined "
            "with its ride's production and shadow predictions. "
            f"A shadow model costs {e['shadow_own_function_us_per_ride']:.1f} µs a ride as its own function "
            f"(the whole fast path again) and {e['shadow_in_consumer_us_per_ride']:.1f} µs as a second model "
            "in the production consumer (predict and encode only).",
        ]
    if "web" in r:
        ours, flask = r["web"]["ours"], r["web"]["flask"]
        lines += [
            "",
            "Web service, single-ride `POST /predict`, one worker on one core, load from the other core:",
            "",
            "| server | peak requests/s (wrk, 16 conn.) | p50 / p99 at half of peak (open loop) |",
            "|---|---|---|",
        ]
        for row in (ours, flask):
            half = row["at_half_peak"]
            lines.append(f"| {row['name']} | {row['peak_rps']:,.0f} | {half['p50_ms']:.1f} / {half['p99_ms']:.1f} ms |")
        lines += [
            "",
            f"Ratio {r['web']['ratio']:.1f}x (goal ≥ 3x); p99 goal ≤ 20 ms at half of peak. The peer is the "
            "course's service as the course runs it: gunicorn's default single sync worker, which closes each "
            "connection (no keep-alive), against uvicorn keeping connections open; gthread or gevent workers "
            "with keep-alive would narrow the gap.",
        ]
    lines += [
        "",
        f"Validation RMSE 2021-01 → 2021-02: baseline {r['rmse']['baseline']:.2f} min, "
        f"ours {r['rmse']['ours']:.2f} min.",
    ]
    if "soak" in r:
        s = r["soak"]
        lines += [
            "",
            f"Soak: {s['events']:,} real ride events through emulator + runner + handler: "
            f"{s['predicted_rides']:,} rides predicted, {s['lost']} lost, {s['seconds']:.0f} s "
            f"({s['events_per_s']:,.0f} events/s), max lag {s['max_lag_ms']:,} ms.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
