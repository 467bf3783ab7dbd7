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
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rides.local.ledger import Ledger, Observed, Pointer, build_ledger
from rides.settings import CONSUMERS, StackNames

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
        from rides.operate.recovery import BatchPointer, make_visible, peek

        messages = peek(self.aws["sqs"], self.urls["failed_batches_queue"])
        make_visible(self.aws["sqs"], self.urls["failed_batches_queue"], messages)
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
