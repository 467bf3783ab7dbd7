"""The stream's commands: produce, consume (the local event-source runner), decide, tail."""

from __future__ import annotations

import json
import logging

import click

from rides.cli.base import UsesAWS, main
from rides.cli.batch import _load_rides
from rides.settings import CONSUMERS, StackNames


# -- streams ---------------------------------------------------------------------------------
@main.command(cls=UsesAWS)
@click.option("--month", default="2021-02", show_default=True, help="TLC month to replay.")
@click.option("-n", "--count", type=int, default=1000, show_default=True)
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible).")
@click.option(
    "--mode",
    type=click.Choice(["batch", "single"]),
    default="batch",
    show_default=True,
    help="PutRecords in batches or put_record one by one.",
)
@click.option("--stream", default=None)
@click.option("--first-id", type=int, default=1, show_default=True)
@click.option(
    "--to-db",
    "to_db",
    is_flag=True,
    help="Insert the rides into the rides table (the batch job's source) instead; same as `rides load`.",
)
@click.option("--database-url", default=None, help="With --to-db: SQLAlchemy URL (default: as `rides load`).")
@click.option(
    "--completions",
    is_flag=True,
    help="Also send each ride's ride-completed event (its real drop-off, duration, fare, tip) when it ends.",
)
@click.option(
    "--time-scale",
    type=float,
    default=60.0,
    show_default=True,
    help="With --completions: how much faster than real time rides end (60: a 20-minute ride in 20 s).",
)
@click.option(
    "--aggregate",
    is_flag=True,
    help="Pack rides in the Kinesis Producer Library's aggregation format (rides.producer, aggregate=True).",
)
def produce(
    month, count, rate, mode, stream, first_id, to_db, database_url, completions, time_scale, aggregate
) -> None:
    """Send real rides from a TLC month as ride events (or, with --to-db, into the rides table),
    through the producer library (rides.producer): validated, batched, retried, in order."""
    import boto3

    if to_db:
        _load_rides(month, count, first_id - 1, rate, database_url)
        return
    if completions:
        from rides.data import read_trips
        from rides.local.producer import completion_events, play, ride_events, schedule_rides

        names = StackNames.from_env()
        frame = read_trips(month).head(count)
        planned = schedule_rides(
            list(ride_events(frame, first_id=first_id)),
            list(completion_events(frame, first_id=first_id)),
            input_stream=stream or names.input_stream,
            completions_stream=names.completions_stream,
            rate=rate,
            time_scale=time_scale,
        )
        result = play(
            boto3.client("kinesis"),
            planned,
            aggregate_share=1.0 if aggregate else 0.0,
            contracts={names.completions_stream: "completion"},
        )
        click.echo(
            f"sent {len(frame):,} rides and their completions in {result.seconds:.1f}s "
            f"({result.kinesis_records:,} Kinesis records)"
        )
        return

    from rides.data import read_trips
    from rides.local.producer import produce as send
    from rides.local.producer import ride_events

    frame = read_trips(month).head(count)
    stream = stream or StackNames.from_env().input_stream
    if aggregate and mode == "single":
        raise click.UsageError("--aggregate packs rides into PutRecords batches: it does not go with --mode single")
    result = send(
        boto3.client("kinesis"),
        stream,
        ride_events(frame, first_id=first_id),
        rate=rate,
        mode=mode,
        total=len(frame),
        aggregate=aggregate,
    )
    click.echo(
        f"sent {result.sent:,} events to {stream} in {result.seconds:.1f}s ({result.rate:,.0f}/s) "
        f"in {result.kinesis_records:,} Kinesis records"
    )


@main.command(cls=UsesAWS)
@click.option("--stream", default=None)
@click.option(
    "--consumer",
    "consumers",
    multiple=True,
    type=click.Choice([*sorted(CONSUMERS), "shadow"]),
    help="Which consumers to run (repeatable; default duration). shadow: the challenger of rides promote --as shadow.",
)
@click.option(
    "--evaluation",
    is_flag=True,
    help="Also run the live evaluation (predictions, completions and ride events → rides evaluate).",
)
@click.option("--batch-size", type=int, default=None)
@click.option("--window", type=int, default=None, help="Batching window in seconds.")
@click.option("--starting-position", type=click.Choice(["TRIM_HORIZON", "LATEST"]), default=None)
@click.option("--max-retries", type=int, default=None)
@click.option("--dry-run", is_flag=True, help="Predict without publishing (DRY_RUN=true).")
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (default: run until Ctrl-C).")
@click.option("--function-timeout", type=float, default=60.0, show_default=True, help="Seconds an invocation may take.")
def consume(
    stream,
    consumers,
    evaluation,
    batch_size,
    window,
    starting_position,
    max_retries,
    dry_run,
    max_seconds,
    function_timeout,
) -> None:
    """Run consumers under the local event-source runner (Lambda's Kinesis mapping), each with
    its own model, checkpoints and configuration, all in this process."""
    import time
    from dataclasses import replace

    import boto3

    from rides.local.runner import run_all
    from rides.local.services import LocalDeployment
    from rides.settings import EventSourceSettings

    overrides = {
        "batch_size": batch_size,
        "maximum_batching_window_in_seconds": window,
        "starting_position": starting_position,
        "maximum_retry_attempts": max_retries,
    }
    settings = replace(EventSourceSettings(), **{k: v for k, v in overrides.items() if v is not None})
    local = LocalDeployment.on_stack(boto3.client("sqs"), settings=settings, DRY_RUN="true" if dry_run else None)
    from rides.settings import SHADOW

    runners = [
        local.consumer(
            SHADOW if key == "shadow" else CONSUMERS[key], stream=stream, function_timeout_s=function_timeout
        )
        for key in consumers or ("duration",)
    ]
    if evaluation:
        runners += local.evaluation(function_timeout_s=function_timeout)
    click.echo(
        f"consuming {runners[0].stream_name} → {local.env['PREDICTIONS_STREAM_NAME']} with "
        f"{', '.join(r.function_name for r in runners)} (batch {settings.batch_size}, "
        f"window {settings.maximum_batching_window_in_seconds}s); Ctrl-C stops"
    )
    click.echo(f"serving {local.describe()}", err=True)
    logging.getLogger("rides.local.services").setLevel(logging.INFO)  # a promotion's switch is news here
    deadline = time.monotonic() + max_seconds if max_seconds else None
    try:
        run_all(
            runners,
            report=lambda stats: click.echo(json.dumps(stats), err=True),
            until=(lambda: time.monotonic() > deadline) if deadline else None,
        )
    except KeyboardInterrupt:
        for runner in runners:
            click.echo(f"stopped {runner.function_name}: {json.dumps(runner.stats.as_dict(runner.shards))}")


@main.command(cls=UsesAWS)
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds to wait for a ride's predictions.")
@click.option("--rules", default=None, help="JSON list of rules, or a path to one (DECISION_RULES).")
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (default: run until Ctrl-C).")
@click.option("--function-timeout", type=float, default=60.0, show_default=True, help="Seconds an invocation may take.")
def decide(timeout_s, rules, max_seconds, function_timeout) -> None:
    """The decision service under the local event-source runner: predictions → decisions."""
    import time

    import boto3

    from rides.local.runner import run_all
    from rides.local.services import LocalDeployment

    local = LocalDeployment.on_stack(
        boto3.client("sqs"),
        DECISION_TIMEOUT_SECONDS=None if timeout_s is None else str(timeout_s),
        DECISION_RULES=rules or None,
    )
    runner = local.decision_service(function_timeout_s=function_timeout)
    names = local.names
    click.echo(
        f"deciding: {names.predictions_stream} → {names.decisions_table} → {names.decisions_stream}; Ctrl-C stops"
    )
    deadline = time.monotonic() + max_seconds if max_seconds else None
    try:
        run_all(
            [runner],
            report=lambda stats: click.echo(json.dumps(stats), err=True),
            until=(lambda: time.monotonic() > deadline) if deadline else None,
        )
    except KeyboardInterrupt:
        click.echo(f"stopped: {json.dumps(runner.stats.as_dict(runner.shards))}")


@main.command(cls=UsesAWS)
@click.option("--stream", default=None)
@click.option("--from-start", is_flag=True, help="Start at TRIM_HORIZON instead of LATEST.")
@click.option("-n", "--count", type=int, default=None, help="Stop after this many records.")
def tail(stream, from_start, count) -> None:
    """Print predictions as they arrive, with latency from the ride event's arrival."""
    import boto3
    import orjson

    from rides.local.reader import arrival_seconds
    from rides.operate.stream_reader import StreamReader

    stream = stream or StackNames.from_env().predictions_stream
    reader = StreamReader(boto3.client("kinesis"), stream, start="TRIM_HORIZON" if from_start else "LATEST")
    seen = [0]  # a list: the stop condition reads the running count
    try:
        for record in reader.follow(until=lambda: count is not None and seen[0] >= count):
            body = orjson.loads(record["Data"])
            source = body.get("source") or {}
            arrival = source.get("approximate_arrival_timestamp")
            latency = f"{(arrival_seconds(record) - arrival) * 1000:6.0f} ms" if arrival else "     ? ms"
            click.echo(f"{latency}  {json.dumps(body.get('prediction'))}  {body.get('model')} v{body.get('version')}")
            seen[0] += 1
    except KeyboardInterrupt:
        pass
