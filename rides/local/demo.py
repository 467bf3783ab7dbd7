"""`make run`: the whole flow on one machine, then a summary.

stack up → train and promote three models (duration, fare, tip) → start their consumers and
the decision service → produce N real rides (plus a few malformed ones) → wait for every
prediction and decision → summary → stop everything started (Ctrl-C safe).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from rides.local.costs import cost_lines
from rides.local.reader import prediction_label
from rides.settings import CONSUMERS, StackNames, state_dir

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
    predictions_out: int = 0  # every model, duplicates included
    predictions_by_model: dict[str, int] = field(default_factory=dict)  # rides with a prediction
    unique_rides: int = 0  # rides with a prediction from every model
    decisions: int = 0
    decision_counts: dict[str, int] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    dead_letter_reasons: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    decision_latencies_ms: list[float] = field(default_factory=list)  # ride arrival → its decision's
    seconds: float = 0.0
    produce_seconds: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # model → "v1 (RMSE … vs baseline …)"
    sample: list[tuple] = field(default_factory=list)
    web: object = None  # rides.local.web_demo.WebDemo
    evaluation: object = None  # rides.local.evaluation_demo.EvaluationDemo
    review_queued: int = 0  # rides waiting in the review queue (one per decision_id)
    costs: list = field(default_factory=list)  # rides.local.costs.Line: what the run would cost on AWS
    aggregated_in: int = 0  # ride events that went inside KPL-aggregated records
    kinesis_records_in: int = 0  # Kinesis records the ride events took
    shards: int = 2  # the input stream's (the others sized from it, as Terraform does)
    usage: list = field(default_factory=list)  # the emulator's meter rows (rides.local.meter)
    invocations: dict = field(default_factory=dict)  # function → invocations, seconds, memory

    @property
    def lost(self) -> int:
        return self.events_in - self.unique_rides


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def restores_environ(function):
    """The demo points this process at a fresh emulator of its own (MLflow and boto3 read the
    environment): whatever it sets is undone when it returns."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        saved = dict(os.environ)
        try:
            return function(*args, **kwargs)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    return wrapper


@restores_environ
def run_demo(
    events: int = 10_000,
    *,
    train_month: str = "2021-01",
    val_month: str = "2021-02",
    produce_month: str = "2021-02",
    challenger_months: tuple[str, str] = ("2023-01", "2023-02"),
    time_scale: float = 120.0,
    rate: float | None = None,
    timeout: float = 600.0,
    progress: bool = True,
    shards: int = 2,
) -> DemoResult:
    from rides.data import read_trips
    from rides.local.backend import clients, stop_process
    from rides.local.producer import completion_events, play, ride_events, schedule_rides
    from rides.local.reader import collect_decisions, collect_predictions, drain_queue
    from rides.local.runner import run_all
    from rides.local.services import LocalDeployment
    from rides.local.stack import create_resources, start_emulator
    from rides.models.promote import promote
    from rides.models.registry import log_training
    from rides.models.training import train
    from rides.operate.stream_reader import StreamReader

    result = DemoResult()
    started = time.monotonic()
    names = StackNames.from_env()
    demo_home = state_dir() / "demo"
    shutil.rmtree(demo_home, ignore_errors=True)  # a fresh emulator: start from a clean registry
    demo_home.mkdir(parents=True)
    os.environ["RIDES_HOME"] = str(demo_home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{demo_home / 'mlflow.db'}"
    # The handlers' per-batch logs and EMF metrics are for CloudWatch; the demo prints a summary.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    _say("starting the local AWS emulator (moto, 127.0.0.1)")
    info, proc = start_emulator(parent_pid=os.getpid(), log_path=demo_home / "emulator.log")
    stop = threading.Event()
    runner_threads: list[threading.Thread] = []
    try:
        os.environ.update(info.env())
        created = create_resources(info.env(), names, shards=shards)
        result.shards = shards
        aws = clients(info.env())
        _say(f"emulator at {info.endpoint}; created {', '.join(sorted(created))}")

        train_frame, val_frame = read_trips(train_month), read_trips(val_month)
        _say(f"training on {train_month}, validating on {val_month} (real NYC TLC green-taxi trips)")
        for spec in CONSUMERS.values():
            trained = train(train_frame, val_frame, target=spec.target)
            registered = log_training(
                trained,
                train_source=train_month,
                val_source=val_month,
                names=names,
                model_name=spec.model_name,
                target=spec.target,
            )
            promoted = promote(registered.name, registered.version, alias="production", target="local")
            if spec.key == "duration":
                production_duration = promoted
            result.models[spec.model_name] = (
                f"v{promoted.version}  (val RMSE {trained.metrics.rmse:.2f} vs baseline "
                f"{trained.baseline_metrics.rmse:.2f})"
            )
            _say(
                f"{spec.model_name} v{promoted.version}: val RMSE {trained.metrics.rmse:.2f} vs baseline "
                f"{trained.baseline_metrics.rmse:.2f}; promoted to production → its local consumer"
            )
            if spec.key == "duration":  # the web service's quick model: the baseline, as its own model
                quick = promote(registered.quick.name, registered.quick.version, alias="production", target="none")
                rmse = trained.baseline_metrics.rmse
                result.models[quick.name] = f"v{quick.version}  (val RMSE {rmse:.2f}; the web service's instant answer)"
                _say(f"{quick.name} v{quick.version}: val RMSE {rmse:.2f}; promoted to production → the web service")

        # The challenger: the same model trained on other months, run as the shadow beside production.
        challenger_train, challenger_val = challenger_months
        _say(f"training a challenger ride-duration on {challenger_train}, validating on {challenger_val}")
        challenger = train(read_trips(challenger_train), read_trips(challenger_val))
        registered = log_training(
            challenger,
            train_source=challenger_train,
            val_source=challenger_val,
            names=names,
            model_name="ride-duration",
        )
        shadow = promote("ride-duration", registered.version, alias="shadow", target="local", role="shadow")
        _say(f"ride-duration v{shadow.version}: val RMSE {challenger.metrics.rmse:.2f}; promoted as the shadow")
        served = {
            (production_duration.version, "production"): (production_duration.uri, f"{train_month} → {val_month}"),
            (shadow.version, "shadow"): (shadow.uri, f"{challenger_train} → {challenger_val}"),
        }

        env = {key: value for key, value in os.environ.items() if key != "DRY_RUN"}
        local = LocalDeployment.on_stack(aws["sqs"], env=env, names=names, kinesis=aws["kinesis"])
        runners = [local.consumer(spec) for spec in CONSUMERS.values()] + [local.shadow_consumer()]
        deciding = local.decision_service()
        evaluating = local.evaluation()
        # The consumers, the decision service and the evaluation are separate functions on AWS:
        # here separate loops, so a slow batch of writes never holds up a prediction.
        for group in (list(runners), [deciding], evaluating):
            runner_threads.append(
                threading.Thread(target=run_all, args=(group,), kwargs={"until": stop.is_set}, daemon=True)
            )
            runner_threads[-1].start()
        _say("running: " + ", ".join(r.function_name for r in runners) + " (local event-source runners)")

        frame = read_trips(produce_month)
        frame = frame.sample(min(events, len(frame)), random_state=7).sort_values("lpep_pickup_datetime")
        frame = frame.reset_index(drop=True)
        good = list(ride_events(frame))
        result.events_in = len(good)
        result.malformed_in = len(MALFORMED)
        stream_events = good[:]
        for i, (name, data) in enumerate(MALFORMED):
            stream_events.insert((i + 1) * len(good) // (len(MALFORMED) + 1), (f"malformed-{name}", data))
        _say(
            f"producing {len(good):,} real rides from {produce_month} + {len(MALFORMED)} malformed events, each "
            f"ride's ride-completed event its real duration later ({time_scale:.0f}x faster)"
        )
        planned = schedule_rides(
            stream_events,
            list(completion_events(frame)),
            input_stream=names.input_stream,
            completions_stream=names.completions_stream,
            rate=rate,
            time_scale=time_scale,
        )
        # Half the sends aggregated (the KPL's format), half plain: the consumers take both.
        produced = play(
            aws["kinesis"],
            planned,
            progress=progress,
            aggregate_share=0.5,
            allow_malformed=True,  # the malformed events are on purpose: they show the dead letters
            contracts={names.completions_stream: "completion"},
        )
        result.produce_seconds = produced.last_sent.get(names.input_stream, produced.seconds)
        result.aggregated_in = produced.aggregated.get(names.input_stream, 0)
        result.kinesis_records_in = produced.records_by_stream.get(names.input_stream, 0)

        ride_ids = {key for key, _ in good}
        models = [spec.model_name for spec in CONSUMERS.values()]
        _say(f"waiting for every prediction on {names.predictions_stream} and every decision")
        by_ride = collect_predictions(
            StreamReader(aws["kinesis"], names.predictions_stream), ride_ids, timeout, models=models
        )
        decided_at: dict[str, float] = {}
        decisions = collect_decisions(
            StreamReader(aws["kinesis"], names.decisions_stream),
            ride_ids,
            max(30.0, timeout - (time.monotonic() - started)),
            arrivals=decided_at,
        )
        result.seconds = time.monotonic() - started
        _summarise(result, by_ride, decisions, models, decided_at)

        letters = drain_queue(aws["sqs"], created[f"sqs:{names.dead_letter_queue}"])
        result.dead_letters = len(letters)
        result.dead_letter_reasons = [letter["error"] for letter in letters]
        _sample(result, frame, by_ride)
        reviews = drain_queue(aws["sqs"], created[f"sqs:{names.review_queue}"])
        result.review_queued = len({body["decision_id"] for body in reviews})

        _say("waiting for live evaluation to join every completion with its predictions")
        from rides.local.evaluation_demo import compare, wait_for_evaluations
        from rides.stream.evaluation.drift import DriftCounter, load_reference
        from rides.stream.evaluation.store import EvaluationStore
        from rides.stream.model import read_metadata

        store = EvaluationStore(aws["dynamodb"], names.evaluations_table)
        wait_for_evaluations(
            store,
            "ride-duration",
            {key: len(good) for key in served},
            max(60.0, timeout - (time.monotonic() - started)),
            evaluating,
        )
        reference = load_reference(production_duration.uri, read_metadata)
        result.evaluation = compare(
            store, frame, served, DriftCounter(aws["dynamodb"], names.evaluations_table, reference)
        )

        _say("the combined mode: a few rides through the web service, with consent")
        from rides.local.web_demo import run_web_rides

        result.web = run_web_rides(frame, aws=aws, names=names)
        result.usage, result.invocations = count_usage(info, [*runners, deciding, *evaluating])
        result.costs = cost_lines(result.usage, result.invocations, archived_streams(names))
        return result
    finally:
        stop.set()
        for thread in runner_threads:
            thread.join(timeout=10)
        stop_process(info.pid)
        proc.wait(timeout=10)


def count_usage(info, runners) -> tuple[list[dict], dict[str, dict]]:
    """What the run's functions used on AWS's terms: the emulator's meter (every call, by the
    function that made it) and the runners' invocations and their times at Terraform's memory."""
    import urllib.request

    from rides.local.costs import MEMORY_MB, function_kind

    with urllib.request.urlopen(f"{info.endpoint}/_rides/meter", timeout=10) as answer:
        usage = json.loads(answer.read())["usage"]
    # The producer's puts count (they are the rides); the demo's own reads and queue drains do not.
    usage = [u for u in usage if u["function"] != "(no function)" or u["service"] == "kinesis"]
    invocations: dict[str, dict] = {}
    for runner in runners:
        run = invocations.setdefault(
            runner.function_name,
            {"invocations": 0, "seconds": 0.0, "memory_mb": MEMORY_MB.get(function_kind(runner.function_name), 1024)},
        )
        run["invocations"] += runner.stats.invocations
        run["seconds"] += runner.stats.invoked_seconds
    return usage, invocations


def archived_streams(names) -> set[str]:
    """The streams Terraform archives with Firehose."""
    return {names.predictions_stream, names.decisions_stream, names.completions_stream}


def _summarise(
    result: DemoResult, by_ride: dict, decisions: dict, models: list[str], decided_at: dict[str, float]
) -> None:
    result.predictions_out = sum(len(seen) for seen in by_ride.values())
    per_model: Counter = Counter()
    for ride_id, seen in by_ride.items():
        per_model.update({prediction_label(body) for body, _ in seen})
        first = next(((body, arrived) for body, arrived in seen if prediction_label(body) == "ride-duration"), None)
        if first and first[0]["source"].get("approximate_arrival_timestamp"):
            ride_arrived = first[0]["source"]["approximate_arrival_timestamp"]
            result.latencies_ms.append((first[1] - ride_arrived) * 1000)
            # only rides decided complete: a timeout decision's latency is the timeout
            if ride_id in decided_at and decisions[ride_id]["reason"] == "complete":
                result.decision_latencies_ms.append((decided_at[ride_id] - ride_arrived) * 1000)
    result.predictions_by_model = dict(per_model)
    result.unique_rides = sum(1 for seen in by_ride.values() if {prediction_label(b) for b, _ in seen} >= set(models))
    result.decisions = len(decisions)
    result.decision_counts = dict(Counter(d["decision"] for d in decisions.values()))
    result.flag_counts = dict(Counter(flag for d in decisions.values() for flag in d["flags"]))


def _sample(result: DemoResult, frame, by_ride: dict) -> None:
    step = max(1, len(frame) // 8)
    for position in range(0, len(frame), step)[:8]:
        seen = by_ride.get(str(position + 1))  # ride ids are positions + 1 (ride_events)
        if not seen:
            continue
        values = {
            prediction_label(body): next(iter(v for k, v in body["prediction"].items() if k != "ride_id"))
            for body, _ in seen
        }
        row = frame.iloc[position]
        result.sample.append(
            (
                position + 1,
                int(row.PULocationID),
                int(row.DOLocationID),
                float(row.trip_distance),
                values.get("ride-duration", np.nan),
                float(row.duration),
                values.get("ride-fare", np.nan),
                float(row.fare_amount),
                values.get("ride-tip", np.nan),
                float(row.tip_amount),
            )
        )


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    return tuple(np.percentile(np.array(values) if values else np.array([np.nan]), [50, 95, 99]))


def format_summary(result: DemoResult) -> str:
    p50, p95, p99 = _percentiles(result.latencies_ms)
    rate = result.events_in / result.produce_seconds if result.produce_seconds else 0.0
    by_model = ", ".join(f"{model} {n:,}" for model, n in sorted(result.predictions_by_model.items()))
    lines = [
        "",
        "rides: end-to-end summary",
        "-------------------------",
        f"events in            {result.events_in:>10,}  (+ {result.malformed_in} malformed)",
        f"  aggregated          {result.aggregated_in:>10,}  rides in KPL-aggregated records; all "
        f"{result.events_in + result.malformed_in:,} events took {result.kinesis_records_in:,} Kinesis records",
        f"predictions out      {result.predictions_out:>10,}  ({by_model})",
        f"rides complete       {result.unique_rides:>10,}  (a prediction from every model)",
        f"lost                 {result.lost:>10,}",
        f"decisions            {result.decisions:>10,}  "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(result.decision_counts.items())),
        f"dead letters         {result.dead_letters:>10,}",
        f"latency p50/p95/p99  {p50:>8.0f} / {p95:.0f} / {p99:.0f} ms  (event arrival → duration prediction)",
        "                     {:>8.0f} / {:.0f} / {:.0f} ms  (event arrival → its decision)".format(
            *_percentiles(result.decision_latencies_ms)
        ),
        f"produce rate         {rate:>10,.0f} events/s",
        f"total time           {result.seconds:>10.1f} s",
        "models:",
        *(f"  {model:<14} {text}" for model, text in result.models.items()),
    ]
    lines.append(
        f"review queue         {result.review_queued:>10,}  rides decided review, waiting for a person (rides review)"
    )
    if result.flag_counts:
        lines.append("decision flags:")
        lines.extend(f"  {flag:<30} {n:,}" for flag, n in sorted(result.flag_counts.items()))
    if result.dead_letter_reasons:
        lines.append("dead-letter reasons (each consumer dead-letters what it cannot read):")
        lines.extend(f"  {n} x {reason[:100]}" for reason, n in sorted(Counter(result.dead_letter_reasons).items()))
    if result.sample:
        lines += [
            "",
            f"{'ride':>6} {'PU':>4} {'DO':>4} {'miles':>6}   {'minutes':>15}   {'fare $':>15}   {'tip $':>13}",
            f"{'':>23}   {'pred':>7} {'real':>7}   {'pred':>7} {'real':>7}   {'pred':>6} {'real':>6}",
        ]
        lines += [
            f"{r:>6} {pu:>4} {do:>4} {d:>6.2f}   {p:>7.1f} {a:>7.1f}   {pf:>7.2f} {af:>7.2f}   {pt:>6.2f} {at:>6.2f}"
            for r, pu, do, d, p, a, pf, af, pt, at in result.sample
        ]
    if result.evaluation is not None:
        from rides.local.evaluation_demo import format_evaluation

        lines += format_evaluation(result.evaluation)
    if result.web is not None:
        from rides.local.web_demo import format_web_demo

        lines += format_web_demo(result.web)
    if result.costs:
        from rides.local.costs import format_costs

        lines += format_costs(result.costs, result.events_in)
    return "\n".join(lines)
