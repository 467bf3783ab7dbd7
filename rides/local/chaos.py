"""A fault-injection run of the whole local stack, and the ledger that accounts for every record.

Real TLC rides plus malformed records go onto `ride-events` while faults are injected on a
schedule (rides.local.emulator.FaultInjector): throttled PutRecords entries, the dead-letter
queue unreachable, DynamoDB throttling, the predictions and decisions streams missing; and
the consumers (`rides consume`) and the decision service (`rides decide`), each its own
process, are killed with SIGKILL at random points and restarted. Then every input record is
looked for in every place it may end:

- each valid ride has a prediction from every consumer (a duplicate is allowed only when it
  names the same source record: Kinesis delivery is at-least-once) and exactly one decision
  (one `decision_id`; a repeated record of the same decision is allowed);
- each malformed record is in the dead-letter queue with its reason;
- what the event source mapping gave up on is in the failed-batches queue (a pointer), until
  `rides redrive` replays it;
- nothing is anywhere else, and nothing is nowhere.

`rides chaos` runs it (`make chaos`: 20,000 rides); integration-test/test_chaos.py runs a
small one in `make test`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rides.settings import CONSUMERS, StackNames
from rides.stream.events import InvalidEvent, parse_record_data

ODD_BUT_VALID = {"trip_distance": 1e300}  # a valid ride by the contract: it must get its answers
MALFORMED = [
    ("bad-json", b"{ride_id: 1, not json"),
    ("bad-utf8", b"\xff\xfe\x00garbage"),
    ("not-an-object", b"[1, 2, 3]"),
    ("no-ride", b'{"ride_id": "m-1"}'),
    ("bad-zone", b'{"ride_id": "m-2", "ride": {"PULocationID": 999, "DOLocationID": 1, "trip_distance": 1.0}}'),
    ("negative-distance", b'{"ride_id": "m-3", "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": -4}}'),
    (
        "pickup-past-year-9999",
        b'{"ride_id": "m-4", "ride": {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0,'
        b' "lpep_pickup_datetime": "9999-12-31T23:59:59-12:00"}}',
    ),
    ("ride-id-too-long", b'{"ride_id": "' + b"x" * 300 + b'", "ride": {"PULocationID": 1, "DOLocationID": 2}}'),
]


@dataclass
class ChaosSettings:
    rides: int = 2_000
    produce_seconds: float = 30.0  # rides are spread over this long, while faults cycle
    fault_seconds: float = 3.0  # each fault lasts this long, with as long a pause after it
    kill_every: tuple[float, float] = (3.0, 8.0)  # seconds between kills, drawn uniformly
    max_retries: int = 2  # the mapping gives up soon: failed batches happen, redrive is needed
    decision_timeout: float = 15.0
    settle_seconds: float = 300.0  # the longest wait for everything to arrive after the faults
    seed: int = 7
    month: str = "2021-02"
    train_rows: int = 20_000


# -- the ledger -----------------------------------------------------------------------------------
@dataclass
class Pointer:
    function_name: str
    shard_id: str
    start: int
    end: int

    def covers(self, shard_id: str, sequence_number: str) -> bool:
        return shard_id == self.shard_id and self.start <= int(sequence_number) <= self.end


@dataclass
class Ledger:
    rides: int = 0
    malformed: int = 0
    models: tuple[str, ...] = ()
    predicted: dict[str, int] = field(default_factory=dict)  # model → rides with a prediction
    duplicate_predictions: dict[str, int] = field(default_factory=dict)  # identifiable repeats
    unidentifiable_duplicates: int = 0  # a repeat naming another source record
    decided: int = 0  # rides with exactly one decision id
    repeated_decision_records: int = 0  # the same decision_id published again
    conflicting_decisions: int = 0  # rides with two decision ids
    dead_lettered: int = 0  # malformed records found in the dead-letter queue
    dead_letters: int = 0  # letters (each consumer letters each malformed record)
    reasons: dict[str, int] = field(default_factory=dict)
    in_failed_batches: dict[str, int] = field(default_factory=dict)  # model → rides only pointed to
    failed_batch_pointers: int = 0
    strays: list[str] = field(default_factory=list)  # records in a place they do not belong
    lost: dict[str, int] = field(default_factory=dict)  # "ride-fare" / "decision" / "dead letter" → n
    lost_examples: list[str] = field(default_factory=list)

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    @property
    def accounted(self) -> bool:
        """Every record in exactly one known place (failed batches count as one)."""
        return (
            not self.total_lost
            and not self.strays
            and not self.unidentifiable_duplicates
            and not (self.conflicting_decisions)
        )

    @property
    def complete(self) -> bool:
        """…and nothing left waiting in the failed-batches queue."""
        return self.accounted and not self.failed_batch_pointers

    def format(self, title: str = "ledger") -> str:
        lines = [
            f"{title}",
            "-" * len(title),
            f"input records        {self.rides + self.malformed:>8,}"
            f"  ({self.rides:,} rides + {self.malformed} malformed)",
        ]
        for model in self.models:
            lines.append(
                f"{model:<20} {self.predicted.get(model, 0):>8,}  rides with a prediction"
                f"  (+{self.duplicate_predictions.get(model, 0):,} repeats naming their source record;"
                f" {self.in_failed_batches.get(model, 0):,} only in failed batches)"
            )
        lines += [
            f"decisions            {self.decided:>8,}  rides with one decision_id"
            f"  (+{self.repeated_decision_records:,} repeated records; {self.conflicting_decisions} conflicting)",
            f"dead letters         {self.dead_lettered:>8,}  malformed records  ({self.dead_letters:,} letters)",
            f"failed batches       {self.failed_batch_pointers:>8,}  pointers waiting for rides redrive",
            f"strays               {len(self.strays):>8,}",
            f"unidentifiable dups  {self.unidentifiable_duplicates:>8,}",
            f"lost                 {self.total_lost:>8,}  {dict(self.lost) if self.lost else ''}",
        ]
        if self.reasons:
            lines.append("dead letters by reason (each consumer letters what it cannot read, again on a retry):")
            lines += [f"  {n:>5} x {reason}" for reason, n in sorted(self.reasons.items())]
        lines += [f"  stray: {s}" for s in self.strays[:5]]
        lines += [f"  lost: {s}" for s in self.lost_examples[:5]]
        return "\n".join(lines)


@dataclass
class Observed:
    """Everything read from the stack: the inputs and every place a record may end."""

    inputs: list[dict] = field(default_factory=list)  # {"shard_id", "sequence_number", "data"}
    predictions: list[dict] = field(default_factory=list)  # prediction records
    prediction_at: list[tuple[str, int]] = field(default_factory=list)  # (shard, sequence number) of each
    decisions: list[dict] = field(default_factory=list)  # decision records
    letters: list[dict] = field(default_factory=list)  # dead-letter bodies
    pointers: list[Pointer] = field(default_factory=list)  # failed batches


def build_ledger(observed: Observed, models: tuple[str, ...], functions: dict[str, str], input_stream: str) -> Ledger:
    """Account for every input record. `functions` maps a consumer's function name to its model."""
    ledger = Ledger(models=models)
    rides: dict[str, dict] = {}  # ride id → its input record
    malformed: dict[tuple[str, str], dict] = {}
    for record in observed.inputs:
        try:
            event = parse_record_data(record["data"])
        except InvalidEvent:
            malformed[(record["shard_id"], record["sequence_number"])] = record
            continue
        rides[str(event.ride_id)] = record
    ledger.rides, ledger.malformed = len(rides), len(malformed)

    seen: dict[tuple[str, str], Counter] = {}
    for body in observed.predictions:
        ride, model = str(body["prediction"]["ride_id"]), body.get("model")
        if ride not in rides or model not in models:
            ledger.strays.append(f"prediction of {model} for unknown ride {ride}")
            continue
        seen.setdefault((ride, model), Counter())[str((body.get("source") or {}).get("sequence_number"))] += 1
    for (ride, _model), sources in seen.items():
        if set(sources) != {rides[ride]["sequence_number"]}:
            ledger.unidentifiable_duplicates += 1
    for model in models:
        with_prediction = [ride for ride in rides if (ride, model) in seen]
        ledger.predicted[model] = len(with_prediction)
        ledger.duplicate_predictions[model] = sum(sum(seen[(r, model)].values()) - 1 for r in with_prediction)

    pointed: dict[str, set[str]] = {}  # model (or "decision") → rides pointed to by a failed batch
    for pointer in observed.pointers:
        model = functions.get(pointer.function_name)
        if model is not None:  # a consumer's: a range of ride events
            for ride, record in rides.items():
                if pointer.covers(record["shard_id"], record["sequence_number"]):
                    pointed.setdefault(model, set()).add(ride)
            continue
        # the decision service's: a range of prediction records
        for body, (shard, sequence) in zip(observed.predictions, observed.prediction_at, strict=True):
            if pointer.covers(shard, str(sequence)):
                pointed.setdefault("decision", set()).add(str(body["prediction"]["ride_id"]))
    ledger.failed_batch_pointers = len(observed.pointers)
    for model in models:
        missing = [ride for ride in rides if (ride, model) not in seen]
        only_pointed = [ride for ride in missing if ride in pointed.get(model, set())]
        ledger.in_failed_batches[model] = len(only_pointed)
        lost = [ride for ride in missing if ride not in pointed.get(model, set())]
        if lost:
            ledger.lost[model] = len(lost)
            ledger.lost_examples += [f"{model} for ride {ride}" for ride in lost[:3]]

    decision_ids: dict[str, Counter] = {}
    for body in observed.decisions:
        ride = str(body.get("ride_id"))
        if ride not in rides:
            ledger.strays.append(f"decision for unknown ride {ride}")
            continue
        decision_ids.setdefault(ride, Counter())[body.get("decision_id")] += 1
    for ride in rides:
        ids = decision_ids.get(ride)
        if not ids:
            # Waiting for a prediction that is in a failed batch is a known place too.
            if not any(ride in pointed.get(model, set()) for model in (*models, "decision")):
                ledger.lost["decision"] = ledger.lost.get("decision", 0) + 1
                ledger.lost_examples.append(f"decision for ride {ride}")
        elif len(ids) > 1:
            ledger.conflicting_decisions += 1
        else:
            ledger.decided += 1
            ledger.repeated_decision_records += sum(ids.values()) - 1

    lettered: set[tuple[str, str]] = set()
    reasons: Counter = Counter()
    for body in observed.letters:
        source = body.get("source") or {}
        key = (source.get("shard_id"), str(source.get("sequence_number")))
        stream = (source.get("stream_arn") or "").rsplit("/", 1)[-1]
        if stream == input_stream and key in malformed:
            lettered.add(key)
            reasons[body.get("error", "?").split(":")[0][:60]] += 1
        else:
            ledger.strays.append(f"dead letter from {stream} {key}: {body.get('error')}")
    ledger.dead_letters = len(observed.letters)
    ledger.dead_lettered = len(lettered)
    ledger.reasons = dict(reasons)
    not_lettered = set(malformed) - lettered
    if not_lettered:
        ledger.lost["dead letter"] = len(not_lettered)
        ledger.lost_examples += [f"malformed record {key} not in the dead-letter queue" for key in sorted(not_lettered)]
    return ledger


# -- reading the stack ----------------------------------------------------------------------------
class Collector:
    """Reads the streams and queues incrementally, so waiting does not re-read everything."""

    def __init__(self, aws: dict, names: StackNames, urls: dict[str, str]):
        from rides.operate.stream_reader import StreamReader

        self.aws, self.names, self.urls = aws, names, urls
        self.readers = {
            "inputs": StreamReader(aws["kinesis"], names.input_stream),
            "predictions": StreamReader(aws["kinesis"], names.predictions_stream),
            "decisions": StreamReader(aws["kinesis"], names.decisions_stream),
        }
        self.observed = Observed()

    def poll(self) -> None:
        import base64

        for record in self._drain("inputs"):
            self.observed.inputs.append(
                {
                    "shard_id": record["ShardId"],
                    "sequence_number": record["SequenceNumber"],
                    "data": base64.b64encode(record["Data"]).decode(),
                }
            )
        for record in self._drain("predictions"):
            self.observed.predictions.append(orjson.loads(record["Data"]))
            self.observed.prediction_at.append((record["ShardId"], int(record["SequenceNumber"])))
        self.observed.decisions += [orjson.loads(r["Data"]) for r in self._drain("decisions")]
        from rides.local.reader import drain_queue

        self.observed.letters += drain_queue(self.aws["sqs"], self.urls["dead_letter_queue"])

    def pointers(self) -> list[Pointer]:
        from rides.operate.recovery import BatchPointer, peek, release

        messages = peek(self.aws["sqs"], self.urls["failed_batches_queue"])
        release(self.aws["sqs"], self.urls["failed_batches_queue"], messages)
        out = []
        for message in messages:
            p = BatchPointer.from_message(message.body)
            out.append(Pointer(p.function_name, p.shard_id, int(p.start), int(p.end)))
        return out

    def _drain(self, name: str) -> list[dict]:
        got: list[dict] = []
        while records := self.readers[name].poll():
            got += records
        return got


# -- the run --------------------------------------------------------------------------------------
class Service:
    """A `rides` CLI process that can be killed and started again."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path):
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rides.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()


FAULT_PLANS = [
    ("PutRecords entries throttled (30%) on the predictions stream", {"throttle_entries": {"fraction": 0.3}}),
    ("dead-letter queue unreachable", {"unreachable_queues": ["dead_letter_queue"]}),
    ("DynamoDB throttled (40% of calls)", {"dynamodb_throttle": 0.4}),
    ("predictions stream missing", {"missing_streams": ["predictions_stream"]}),
    ("decisions stream missing", {"missing_streams": ["decisions_stream"]}),
]


def _plan_for(plan: dict, names: StackNames) -> dict:
    """Fault plans name resources by their role; the emulator wants their names."""
    out = dict(plan)
    if "throttle_entries" in plan:
        out["throttle_entries"] = {**plan["throttle_entries"], "stream": names.predictions_stream}
    for key in ("unreachable_queues", "missing_streams"):
        if key in plan:
            out[key] = [getattr(names, role) for role in plan[key]]
    return out


def set_faults(endpoint: str, plan: dict) -> dict:
    request = urllib.request.Request(f"{endpoint}/_rides/faults", data=json.dumps(plan).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class ChaosResult:
    before_redrive: Ledger
    after_redrive: Ledger
    faults: list[str] = field(default_factory=list)
    fault_hits: dict[str, int] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    redrive: dict = field(default_factory=dict)
    seconds: float = 0.0

    def format(self) -> str:
        return "\n".join(
            [
                "",
                f"faults injected: {', '.join(self.faults)}",
                f"fault hits: {json.dumps(self.fault_hits, sort_keys=True)}",
                f"processes killed (SIGKILL) and restarted: {json.dumps(self.kills)}",
                "",
                self.before_redrive.format("ledger after the faults"),
                "",
                f"rides redrive: {json.dumps(self.redrive)}",
                "",
                self.after_redrive.format("ledger after rides redrive"),
                "",
                f"total time {self.seconds:.0f} s",
            ]
        )


def run_chaos(settings: ChaosSettings, workdir: Path, say=print) -> ChaosResult:
    """The whole run on a private emulator; returns both ledgers."""
    from rides.data import read_trips
    from rides.local.backend import clients, stop_process
    from rides.local.producer import produce, ride_events
    from rides.local.stack import create_resources, start_emulator
    from rides.models.promote import promote
    from rides.models.registry import log_training
    from rides.models.training import train

    started = time.monotonic()
    rng = random.Random(settings.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    names = StackNames()
    info, emulator = start_emulator(parent_pid=os.getpid(), log_path=workdir / "emulator.log")
    services: list[Service] = []
    try:
        created = create_resources(info.env(), names)
        aws = clients(info.env())
        urls = {
            "dead_letter_queue": created[f"sqs:{names.dead_letter_queue}"],
            "failed_batches_queue": created[f"sqs:{names.failed_batches_queue}"],
        }
        env = {
            **os.environ,
            **info.env(),
            "RIDES_HOME": str(workdir),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "PREDICTIONS_STREAM_NAME": names.predictions_stream,
            "DEAD_LETTER_QUEUE_URL": urls["dead_letter_queue"],
        }
        previous = {key: os.environ.get(key) for key in env}
        os.environ.update({k: v for k, v in env.items() if k in ("RIDES_HOME", "MLFLOW_TRACKING_URI")})
        os.environ.update(info.env())
        try:
            say(f"training three models on {settings.train_rows:,} rides of 2021-01 (validated on 2021-02)")
            train_frame = read_trips("2021-01").head(settings.train_rows)
            val_frame = read_trips("2021-02").head(settings.train_rows)
            for spec in CONSUMERS.values():
                trained = train(train_frame, val_frame, target=spec.target)
                registered = log_training(
                    trained,
                    train_source="2021-01",
                    val_source="2021-02",
                    names=names,
                    model_name=spec.model_name,
                    target=spec.target,
                )
                promote(registered.name, registered.version, alias="production", target="local")
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        services = [
            Service(
                "consumers",
                [
                    "consume",
                    *[arg for key in CONSUMERS for arg in ("--consumer", key)],
                    *("--window", "0", "--max-retries", str(settings.max_retries), "--function-timeout", "20"),
                ],
                env,
                workdir / "consume.log",
            ),
            Service(
                "decision-service",
                ["decide", "--timeout", str(settings.decision_timeout), "--function-timeout", "20"],
                env,
                workdir / "decide.log",
            ),
        ]
        for service in services:
            service.start()

        frame = read_trips(settings.month)
        frame = frame.sample(min(settings.rides, len(frame)), random_state=settings.seed).reset_index(drop=True)
        good = list(ride_events(frame))
        odd = orjson.loads(good[0][1])
        odd["ride"].update(ODD_BUT_VALID)
        good[0] = (good[0][0], orjson.dumps(odd))
        events = good[:]
        for i, (kind, data) in enumerate(MALFORMED):
            events.insert((i + 1) * len(good) // (len(MALFORMED) + 1), (f"malformed-{kind}", data))

        stop = threading.Event()
        faults_seen: list[str] = []

        def inject() -> None:
            while not stop.is_set():
                for label, plan in FAULT_PLANS:
                    if stop.is_set():
                        break
                    set_faults(info.endpoint, _plan_for(plan, names))
                    if label not in faults_seen:
                        faults_seen.append(label)
                    stop.wait(settings.fault_seconds)
                    set_faults(info.endpoint, {})
                    stop.wait(settings.fault_seconds)

        def kill() -> None:
            while not stop.wait(rng.uniform(*settings.kill_every)):
                victim = rng.choice(services)
                victim.kill()
                stop.wait(rng.uniform(0.2, 1.5))
                victim.ensure_running()

        threads = [threading.Thread(target=inject, daemon=True), threading.Thread(target=kill, daemon=True)]
        for thread in threads:
            thread.start()
        say(
            f"producing {len(good):,} rides + {len(MALFORMED)} malformed over {settings.produce_seconds:.0f}s "
            "while faults cycle and processes are killed"
        )
        produce(
            aws["kinesis"],
            names.input_stream,
            events,
            rate=len(events) / settings.produce_seconds,
            progress=False,
            allow_malformed=True,  # on purpose: the ledger finds them in the dead-letter queue
        )
        # Faults and kills go on for one more cycle after the last ride is in.
        stop.wait(2 * settings.fault_seconds * len(FAULT_PLANS))
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        set_faults(info.endpoint, {})
        fault_hits = set_faults(info.endpoint, {})["hits"]
        for service in services:
            service.ensure_running()

        models = tuple(spec.model_name for spec in CONSUMERS.values())
        functions = {spec.function_name: spec.model_name for spec in CONSUMERS.values()}
        collector = Collector(aws, names, urls)
        say("faults over: waiting until every record is somewhere")
        before = _settle(collector, models, functions, names, settings, need_complete=False)
        say(before.format("ledger after the faults"))

        say("rides redrive: replaying the failed batches from the stream")
        redrive = subprocess.run(
            [sys.executable, "-m", "rides.cli", "redrive"], env=env, capture_output=True, text=True, timeout=600
        )
        redriven = _last_json(redrive.stdout) or {"error": redrive.stderr[-500:]}
        after = _settle(collector, models, functions, names, settings, need_complete=True)
        return ChaosResult(
            before_redrive=before,
            after_redrive=after,
            faults=faults_seen,
            fault_hits=fault_hits,
            kills={service.name: service.kills for service in services},
            redrive=redriven,
            seconds=time.monotonic() - started,
        )
    finally:
        for service in services:
            service.stop()
        stop_process(info.pid)
        emulator.wait(timeout=10)


def _settle(collector: Collector, models, functions, names: StackNames, settings: ChaosSettings, *, need_complete):
    """Poll until the ledger accounts for everything (and, if asked, nothing waits in failed
    batches), or it stops changing for a while, or the settle time is over."""
    deadline = time.monotonic() + settings.settle_seconds
    last_change, last_key = time.monotonic(), None
    while True:
        collector.poll()
        collector.observed.pointers = collector.pointers()
        ledger = build_ledger(collector.observed, models, functions, names.input_stream)
        done = ledger.complete if need_complete else ledger.accounted
        key = (len(collector.observed.predictions), len(collector.observed.decisions), ledger.failed_batch_pointers)
        if key != last_key:
            last_change, last_key = time.monotonic(), key
        # Settled: everything accounted for and nothing new for a while (late repeats land too).
        quiet = time.monotonic() - last_change
        if (done and quiet > 5) or quiet > 60 or time.monotonic() > deadline:
            return ledger
        time.sleep(1.0)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
