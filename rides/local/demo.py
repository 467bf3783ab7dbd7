"""`make run`: the whole flow on one machine, then a summary.

stack up → train → promote → consume → produce N real rides (plus a few malformed ones) →
wait for every prediction → summary → stop everything started (Ctrl-C safe).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from rides.resources import StackNames
from rides.state import state_dir

MALFORMED = [
    ("bad-json", b"{ride_id: 1, not json"),
    ("bad-utf8", b"\xff\xfe\x00garbage"),
    ("no-ride", b'{"ride_id": "m-1"}'),
    ("bad-zone", b'{"ride_id": "m-2", "ride": {"PULocationID": 999, "DOLocationID": 1, "trip_distance": 1.0}}'),
    ("negative-distance", b'{"ride_id": "m-3", "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": -4}}'),
]


@dataclass
class DemoResult:
    events_in: int = 0
    malformed_in: int = 0
    predictions_out: int = 0
    unique_rides: int = 0
    dead_letters: int = 0
    dead_letter_reasons: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    produce_seconds: float = 0.0
    model_version: str = ""
    rmse: float = float("nan")
    baseline_rmse: float = float("nan")
    sample: list[tuple] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.events_in - self.unique_rides


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run_demo(
    events: int = 10_000,
    *,
    train_month: str = "2021-01",
    val_month: str = "2021-02",
    produce_month: str = "2021-02",
    rate: float | None = None,
    timeout: float = 300.0,
    progress: bool = True,
) -> DemoResult:
    from rides.data import read_trips
    from rides.local.producer import produce, ride_events
    from rides.local.reader import StreamReader, collect_predictions, drain_queue
    from rides.local.runner import EventSourceRunner, model_watcher
    from rides.local.stack import clients, create_resources, start_emulator, stop_process
    from rides.promote import promote
    from rides.registry import log_training
    from rides.training import train

    result = DemoResult()
    started = time.monotonic()
    names = StackNames.from_env()
    demo_home = state_dir() / "demo"
    shutil.rmtree(demo_home, ignore_errors=True)  # a fresh emulator: start from a clean registry
    demo_home.mkdir(parents=True)
    os.environ["RIDES_HOME"] = str(demo_home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{demo_home / 'mlflow.db'}"
    # The handler's per-batch logs and EMF metrics are for CloudWatch; the demo prints a summary.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    _say("starting the local AWS emulator (moto, 127.0.0.1)")
    info, proc = start_emulator(parent_pid=os.getpid(), log_path=demo_home / "emulator.log")
    stop = threading.Event()
    runner_thread = None
    try:
        os.environ.update(info.env())
        created = create_resources(info.env(), names)
        aws = clients(info.env())
        _say(f"emulator at {info.endpoint}; created {', '.join(sorted(created))}")

        _say(f"training on {train_month}, validating on {val_month} (real NYC TLC green-taxi trips)")
        trained = train(read_trips(train_month), read_trips(val_month))
        registered = log_training(trained, train_source=train_month, val_source=val_month, names=names)
        result.rmse, result.baseline_rmse = trained.metrics.rmse, trained.baseline_metrics.rmse
        _say(
            f"registered {registered.name} v{registered.version} (alias staging): val RMSE "
            f"{trained.metrics.rmse:.2f} min vs baseline {trained.baseline_metrics.rmse:.2f}; {registered.uri}"
        )

        promoted = promote(registered.name, registered.version, alias="production", target="local")
        result.model_version = promoted.version
        _say(f"promoted v{promoted.version} to production → local consumer")

        os.environ["PREDICTIONS_STREAM_NAME"] = names.predictions_stream
        os.environ["DEAD_LETTER_QUEUE_URL"] = created[f"sqs:{names.dead_letter_queue}"]
        os.environ.pop("DRY_RUN", None)
        runner = EventSourceRunner(
            names.input_stream,
            kinesis=aws["kinesis"],
            sqs=aws["sqs"],
            function_name=names.consumer_function,
            on_failure_queue_url=created[f"sqs:{names.failed_batches_queue}"],
            on_poll=model_watcher(registered.name),
        )
        runner_thread = threading.Thread(target=runner.run, kwargs={"until": stop.is_set}, daemon=True)
        runner_thread.start()
        _say("consumer running: local event-source runner → lambda_function.handler.lambda_handler")

        frame = read_trips(produce_month)
        frame = frame.sample(min(events, len(frame)), random_state=7).sort_values("lpep_pickup_datetime")
        frame = frame.reset_index(drop=True)
        good = list(ride_events(frame))
        result.events_in = len(good)
        result.malformed_in = len(MALFORMED)
        stream_events = good[:]
        for i, (name, data) in enumerate(MALFORMED):
            stream_events.insert((i + 1) * len(good) // (len(MALFORMED) + 1), (f"malformed-{name}", data))
        _say(f"producing {len(good):,} real rides from {produce_month} + {len(MALFORMED)} malformed events")
        produced = produce(
            aws["kinesis"], names.input_stream, stream_events, rate=rate, progress=progress, total=len(stream_events)
        )
        result.produce_seconds = produced.seconds

        _say("waiting for every prediction on " + names.predictions_stream)
        reader = StreamReader(aws["kinesis"], names.predictions_stream)
        by_ride = collect_predictions(reader, {key for key, _ in good}, timeout)
        result.unique_rides = len(by_ride)
        result.predictions_out = sum(len(seen) for seen in by_ride.values())
        for (body, arrived), *_ in by_ride.values():
            source_arrival = body["source"].get("approximate_arrival_timestamp")
            if source_arrival:
                result.latencies_ms.append((arrived - source_arrival) * 1000)
        result.seconds = time.monotonic() - started

        letters = drain_queue(aws["sqs"], created[f"sqs:{names.dead_letter_queue}"])
        result.dead_letters = len(letters)
        result.dead_letter_reasons = [letter["error"] for letter in letters]
        step = max(1, len(frame) // 8)
        for position in range(0, len(frame), step)[:8]:
            predicted = by_ride.get(str(position + 1))  # ride ids are positions + 1 (ride_events)
            if predicted:
                row = frame.iloc[position]
                result.sample.append(
                    (
                        position + 1,
                        int(row.PULocationID),
                        int(row.DOLocationID),
                        float(row.trip_distance),
                        predicted[0][0]["prediction"]["ride_duration"],
                        float(row.duration),
                    )
                )
        return result
    finally:
        stop.set()
        if runner_thread is not None:
            runner_thread.join(timeout=10)
        stop_process(info.pid)
        proc.wait(timeout=10)


def format_summary(result: DemoResult) -> str:
    lat = np.array(result.latencies_ms) if result.latencies_ms else np.array([np.nan])
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    rate = result.events_in / result.produce_seconds if result.produce_seconds else 0.0
    lines = [
        "",
        "rides: end-to-end summary",
        "-------------------------",
        f"events in            {result.events_in:>10,}  (+ {result.malformed_in} malformed)",
        f"predictions out      {result.predictions_out:>10,}  ({result.unique_rides:,} rides, "
        f"{result.predictions_out - result.unique_rides} redelivered duplicates)",
        f"lost                 {result.lost:>10,}",
        f"dead letters         {result.dead_letters:>10,}",
        f"model                ride-duration v{result.model_version}  (val RMSE {result.rmse:.2f} min, "
        f"baseline {result.baseline_rmse:.2f})",
        f"latency p50/p95/p99  {p50:>8.0f} / {p95:.0f} / {p99:.0f} ms  (event arrival → prediction arrival)",
        f"produce rate         {rate:>10,.0f} events/s",
        f"total time           {result.seconds:>10.1f} s",
    ]
    if result.dead_letter_reasons:
        lines.append("dead-letter reasons:")
        lines.extend(f"  - {reason[:100]}" for reason in sorted(result.dead_letter_reasons))
    if result.sample:
        lines += ["", f"{'ride':>6} {'PU':>4} {'DO':>4} {'miles':>6} {'predicted':>10} {'actual':>8}"]
        lines += [f"{r:>6} {pu:>4} {do:>4} {d:>6.2f} {p:>10.1f} {a:>8.1f}" for r, pu, do, d, p, a in result.sample]
    return "\n".join(lines)
