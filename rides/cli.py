"""The `rides` command line."""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from rides import RidesError
from rides.settings import CONSUMERS, StackNames


class RidesCLI(click.Group):
    """Every RidesError, from any command, becomes its one-line message and exit code 1: here,
    not in each command."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RidesError as exc:
            raise click.ClickException(str(exc)) from None


class UsesAWS(click.Command):
    """A command that talks to AWS: to the local stack when one runs and no other endpoint is
    configured. This is the one place the CLI points boto3's standard variables
    (AWS_ENDPOINT_URL, test credentials) at it, once per process, before the command runs."""

    def invoke(self, ctx):
        if not (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("RIDES_TARGET") == "aws"):
            from rides.local.stack import read_info

            info = read_info()
            if info is not None:
                info.apply_to(os.environ)  # an explicit setting (RIDES_WEB_AUTH=api-key) wins
                click.echo(f"(using the local stack at {info.endpoint})", err=True)
        return super().invoke(ctx)


@click.group(cls=RidesCLI)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """rides: a streaming ML consumer for ride-hailing backends."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


# -- stack -----------------------------------------------------------------------------------
@main.group()
def stack() -> None:
    """The local AWS emulator and its resources."""


@stack.command("up")
@click.option("--port", type=int, default=None, help="Emulator port (default 4566).")
@click.option("--shards", type=int, default=2, show_default=True)
@click.option(
    "--backend",
    type=click.Choice(["moto", "localstack"]),
    default="moto",
    show_default=True,
    help="moto (embedded, fast) or LocalStack in host mode (real Lambda event source mapping).",
)
@click.option(
    "--model-uri", default=None, help="LocalStack: deploy the consumer with this model (else the locally promoted one)."
)
@click.option(
    "--aws-limits/--no-aws-limits",
    default=None,
    help="moto: enforce Kinesis's record and request sizes and per-shard rates as AWS does (default on; "
    "RIDES_AWS_LIMITS=off).",
)
def stack_up(port: int | None, shards: int, backend: str, model_uri: str | None, aws_limits: bool | None) -> None:
    """Start the emulator and create the Terraform resources by the same names; on LocalStack
    also deploy the consumer Lambda and its event source mapping."""
    from rides.local.stack import DEFAULT_PORT, up

    info = up(port or DEFAULT_PORT, shards=shards, backend=backend, aws_limits=aws_limits)
    click.echo(f"{backend} stack running: {info.endpoint} (pid {info.pid}, log {info.log})")
    if backend == "localstack":
        from rides.local import localstack
        from rides.promote import read_local_model

        names = StackNames.from_env()
        control = read_local_model(names.registered_model) or {}
        uri = model_uri or control.get("MODEL_URI")
        if not uri:
            click.echo(
                "no model promoted yet: the consumer waits for `rides train` and "
                f"`rides promote --to lambda --function {names.consumer_function}`"
            )
        os.environ.update(info.env())
        deployed = localstack.deploy_consumer(
            info, names, model_uri=uri or "", model_version=str(control.get("MODEL_VERSION") or "")
        )
        click.echo(f"deployed {deployed['function']} with its event source mapping on {names.input_stream}")
    click.echo("to use it from another shell:")
    for key, value in info.env().items():
        click.echo(f"  export {key}={value}")


@stack.command("down")
def stack_down() -> None:
    """Stop the emulator this project started."""
    from rides.local.stack import down

    info = down()
    click.echo(f"stopped emulator pid {info.pid}" if info else "no local stack was running")


@stack.command("status")
def stack_status() -> None:
    from rides.local.stack import read_info

    info = read_info()
    if info is None:
        click.echo("local stack: not running")
        sys.exit(1)
    click.echo(f"local stack: running at {info.endpoint} (pid {info.pid}, log {info.log})")


# -- model lifecycle -------------------------------------------------------------------------
@main.command(cls=UsesAWS)
@click.option("--train-month", default=None, help="YYYY-MM of TLC green-taxi data.")
@click.option("--val-month", default=None, help="YYYY-MM for validation.")
@click.option("--train-path", default=None, help="Parquet path or s3:// URI instead of a month.")
@click.option("--val-path", default=None)
@click.option(
    "--consumer",
    "consumer",
    default="duration",
    show_default=True,
    type=click.Choice(sorted(CONSUMERS)),
    help="Which model: duration (ride-duration), fare (ride-fare) or tip (ride-tip).",
)
def train(train_month, val_month, train_path, val_path, consumer) -> None:
    """Train on TLC months, log to MLflow, register a new version (alias staging)."""
    spec = CONSUMERS[consumer]
    model_name, target = spec.model_name, spec.target
    from rides.data import read_trips
    from rides.registry import log_training
    from rides.training import train as fit

    train_source = train_path or train_month or "2021-01"
    val_source = val_path or val_month or "2021-02"
    trained = fit(read_trips(train_source), read_trips(val_source), target=target)
    click.echo(
        f"baseline (DictVectorizer+LinearRegression): RMSE {trained.baseline_metrics.rmse:.3f} "
        f"MAE {trained.baseline_metrics.mae:.3f}"
    )
    click.echo(
        f"ours (gradient-boosted trees, ONNX):        RMSE {trained.metrics.rmse:.3f} "
        f"MAE {trained.metrics.mae:.3f}   ({trained.seconds:.1f}s)"
    )
    registered = log_training(
        trained, train_source=train_source, val_source=val_source, model_name=model_name, target=target
    )
    click.echo(f"registered {registered.name} version {registered.version} (alias {registered.alias})")
    click.echo(f"MODEL_URI={registered.uri}")
    quick = registered.quick
    click.echo(
        f"registered {quick.name} version {quick.version} (alias {quick.alias}): the baseline as the web "
        f"service's quick model, val RMSE {trained.baseline_metrics.rmse:.3f}"
    )


@main.command(cls=UsesAWS)
@click.option("--model-name", default=None)
@click.option(
    "--version", "version", default="staging", show_default=True, help="A version number or an alias to promote."
)
@click.option("--alias", default="production", show_default=True)
@click.option(
    "--to",
    "target",
    type=click.Choice(["local", "lambda", "none"]),
    default="local",
    show_default=True,
    help="Where to roll it out.",
)
@click.option("--function", "function_name", default=None, help="Lambda function (with --to lambda).")
@click.option(
    "--as",
    "role",
    type=click.Choice(["production", "shadow"]),
    default="production",
    show_default=True,
    help="shadow: run it beside production on the same events (alias shadow), evaluated, never decided on.",
)
@click.option("--force", is_flag=True, help="Promote to production even when the gate refuses.")
@click.option("--min-rides", type=int, default=None, help="Rides the shadow must have evaluated (default 500).")
@click.option("--max-worse", type=float, default=None, help="RMSE above production the gate allows (default 0.02).")
def promote(model_name, version, alias, target, function_name, role, force, min_rides, max_worse) -> None:
    """Point an alias at a version and roll it out. To @production only if live evaluation shows
    it (as the shadow) is not worse than what serves, on the same rides, unless --force."""
    from rides.promote import promote as run
    from rides.registry import ModelNotFound, PromotionError, resolve

    names = StackNames.from_env()
    name = model_name or names.registered_model
    if role == "shadow" and alias == "production":
        alias = "shadow"
    from rides.settings import SHADOW

    if alias == "production" and role == "production" and name != SHADOW.model_name:
        click.echo(f"gate: {name} has no shadow consumer to evaluate a challenger; promoted on its offline figures")
    elif alias == "production" and role == "production":
        candidate = resolve(name, version)
        try:
            serving = resolve(name, "production").version
        except ModelNotFound:
            serving = None
        verdict = _gate(name, candidate.version, serving, min_rides, max_worse)
        if not verdict.allowed and not force:
            raise PromotionError(f"refused: {verdict.reason}; --force promotes anyway")
        click.echo(("gate: " if verdict.allowed else "gate overridden (--force): ") + verdict.reason)
    function = function_name or (
        names.consumer_function if role == "production" else f"{names.registered_model}-shadow-consumer"
    )
    model = run(name, version, alias=alias, target=target, function_name=function, role=role)
    click.echo(f"{model.name} version {model.version} is now @{alias}, rolled out to {target} as {role}")
    if model.quick is not None:
        click.echo(f"{model.quick.name} version {model.quick.version} (the same run's) is now @{alias}: `rides serve`")
    if role == "production":
        click.echo(f'terraform: model_uri = "{model.uri}"')
        click.echo(f'           model_version = "{model.version}"')
    else:
        click.echo(f'terraform: shadow_model_uri = "{model.uri}"')
        click.echo(f'           shadow_model_version = "{model.version}"')


def _gate(name, candidate, serving, min_rides, max_worse):
    import boto3

    from rides import promotion_gate
    from rides.stream.evaluation.store import EvaluationStore

    if serving is None or serving == candidate:
        return promotion_gate.judge(None, name, candidate, serving)
    client = boto3.client("dynamodb")
    table = StackNames.from_env().evaluations_table
    store = EvaluationStore(client, table)
    try:
        return promotion_gate.judge(
            store,
            name,
            candidate,
            serving,
            min_rides=min_rides if min_rides is not None else promotion_gate.MIN_RIDES,
            max_worse=max_worse if max_worse is not None else promotion_gate.MAX_WORSE,
        )
    except Exception as exc:  # the table cannot be read: no evidence, so no promotion without --force
        return promotion_gate.unreadable(exc, table, client.meta.endpoint_url)


@main.command(cls=UsesAWS)
@click.argument("model", default="ride-duration@production")
@click.option(
    "--missing-ok",
    is_flag=True,
    help="Print {} when the registry says there is no such version or alias (a registry error still fails).",
)
def resolve(model, missing_ok) -> None:
    """Print the version and S3 location of NAME@ALIAS or NAME/VERSION as JSON."""
    from rides.registry import ModelNotFound, parse_model_ref
    from rides.registry import resolve as lookup

    try:
        found = lookup(*parse_model_ref(model))
    except ModelNotFound:
        if not missing_ok:
            raise
        click.echo("{}")
        return
    click.echo(json.dumps({"name": found.name, "version": found.version, "uri": found.uri}))


@main.command(cls=UsesAWS)
@click.option("--timeout", type=float, default=180.0, show_default=True)
@click.option(
    "--record",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A deploy record: each model must answer from the version it names (default: any version).",
)
@click.option("--web-url", default=None, help="The web service's URL (a function URL: the request is SigV4-signed).")
@click.option(
    "--evaluation/--no-evaluation", default=True, show_default=True, help="Also wait for the live evaluation's join."
)
def smoke(timeout, record, web_url, evaluation) -> None:
    """One ride through everything deployed: every production model's prediction (from the
    recorded versions), its decision, the evaluation's join of its completion, and a web answer."""
    from pathlib import Path

    import boto3

    from rides.smoke import Expected, smoke_test

    expected = Expected.from_record(json.loads(Path(record).read_text())) if record else None
    report = smoke_test(
        {"kinesis": boto3.client("kinesis"), "dynamodb": boto3.client("dynamodb")},
        StackNames.from_env(),
        expected,
        web_url=web_url,
        web_api_key=os.environ.get("RIDES_SMOKE_API_KEY"),
        evaluation=evaluation,
        timeout=timeout,
    )
    click.echo(json.dumps(report.as_dict()))


@main.group()
def models() -> None:
    """Report on the models; carry deployed models from one account to another."""


@models.command("report")
@click.option("--train-month", default="2021-01", show_default=True)
@click.option("--val-month", default="2021-02", show_default=True)
@click.option("--held-out", "held_out", multiple=True, default=("2021-03",), show_default=True)
@click.option("--write-readme", is_flag=True, help="Write the table into README.md's models section.")
def models_report(train_month, val_month, held_out, write_readme) -> None:
    """Each consumer's model against its baseline on held-out months (the README's table)."""
    from pathlib import Path

    from rides.model_report import format_rows, model_rows
    from rides.model_report import write_readme as write

    text = format_rows(model_rows(train_month, val_month, list(held_out)), train_month, val_month)
    click.echo(text)
    if write_readme:
        write(text, Path(__file__).resolve().parent.parent / "README.md")


@models.command("export")
@click.option("--record", "record", required=True, type=click.Path(exists=True), help="Staging's deploy record.")
@click.option("--to", "folder", required=True, type=click.Path(), help="Folder to write the models into.")
def models_export(record, folder) -> None:
    """Download the artifacts of exactly the versions a deploy record names."""
    from pathlib import Path

    import boto3

    from rides.model_transfer import export_models

    exported = export_models(Path(record), Path(folder), boto3.client("s3"))
    click.echo(json.dumps({m: e["version"] for m, e in exported["models"].items()}))


@models.command("import")
@click.option("--from", "folder", required=True, type=click.Path(exists=True), help="What `models export` wrote.")
@click.option("--bucket", required=True, help="This account's model bucket.")
@click.option("--record-out", required=True, type=click.Path(), help="Where to write the rewritten deploy record.")
def models_import(folder, bucket, record_out) -> None:
    """Upload exported models into this account's bucket, check they load, rewrite the record."""
    from pathlib import Path

    import boto3

    from rides.model_transfer import import_models

    imported = import_models(Path(folder), bucket, boto3.client("s3"), Path(record_out))
    click.echo(json.dumps({m: e["uri"] for m, e in imported["models"].items()}))


@main.command("release")
@click.argument("releases_file", type=click.Path(exists=True))
@click.option(
    "--before-out", type=click.Path(), default=None, help="Record where the aliases stood, before moving any."
)
@click.option(
    "--roll-back-to",
    "roll_back_to",
    type=click.Path(exists=True),
    default=None,
    help="Put the aliases back where --before-out recorded them, instead of releasing.",
)
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait for the CodeDeploy deployments.")
def release_command(releases_file, before_out, roll_back_to, timeout) -> None:
    """Move each function's alias to the version the apply published (`terraform output -json releases`)."""
    from pathlib import Path

    import boto3

    from rides import release as releasing

    releases = releasing.load_releases(json.loads(Path(releases_file).read_text()))
    lam = boto3.client("lambda")
    if roll_back_to:
        for line in releasing.roll_back(json.loads(Path(roll_back_to).read_text()), releases, lambda_client=lam):
            click.echo(f"rolled back {line}")
        return
    before = releasing.serving(releases, lam)
    if before_out:
        Path(before_out).write_text(json.dumps(before))
    outcome = releasing.release(
        releases, lambda_client=lam, codedeploy_client=boto3.client("codedeploy"), before=before, timeout=timeout
    )
    click.echo(outcome.summary())


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


# -- recovery --------------------------------------------------------------------------------
def _queue_url(sqs, which: str) -> str:
    names = StackNames.from_env()
    name = names.dead_letter_queue if which == "dead-letters" else names.failed_batches_queue
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


@main.command("dead-letters", cls=UsesAWS)
@click.option(
    "--queue",
    type=click.Choice(["dead-letters", "failed-batches"]),
    default="dead-letters",
    show_default=True,
    help="The dead-letter queue (records with their reason) or the failed-batches queue (stream ranges).",
)
@click.option("--limit", type=int, default=None, help="At most this many messages.")
@click.option("--as-json", is_flag=True, help="One JSON message per line.")
def dead_letters(queue, limit, as_json) -> None:
    """List what waits for an operator, with counts by reason; the messages stay queued."""
    import boto3

    from rides.recovery import BatchPointer, decoded_data, peek, reason_counts, release

    sqs = boto3.client("sqs")
    url = _queue_url(sqs, queue)
    messages = peek(sqs, url, limit=limit)
    release(sqs, url, messages)
    if as_json:
        for message in messages:
            click.echo(json.dumps(message.body))
        return
    click.echo(f"{len(messages)} messages in {queue}")
    if queue == "dead-letters":
        for reason, n in reason_counts(messages).most_common():
            click.echo(f"  {n:>6} x {reason}")
        for message in messages:
            body, source = message.body, message.body.get("source") or {}
            origin = f"{(source.get('stream_arn') or '?').rsplit('/', 1)[-1]}/{source.get('shard_id')}"
            click.echo(f"- {body.get('error')}\n    from {origin} @ {source.get('sequence_number')}")
            click.echo(f"    data {decoded_data(body)[:120]!r}")
        return
    for message in messages:
        p = BatchPointer.from_message(message.body)
        click.echo(
            f"- {p.function_name}: {p.stream_name}/{p.shard_id} {p.start}..{p.end} ({p.size} records, {p.condition})"
        )


@main.command(cls=UsesAWS)
@click.option("--hours", type=int, default=6, show_default=True, help="Hours of trend to print.")
@click.option("--html", "html_path", default=None, help="Also write the HTML report (RMSE per hour plotted) here.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML report in a browser.")
@click.option(
    "--drift-reference",
    default=None,
    help="Model whose training data is the drift reference (default: ride-duration@production).",
)
@click.option(
    "--from-archive",
    is_flag=True,
    help="Recompute from the parquet archive in the model bucket instead (looks back as far as it holds).",
)
def evaluate(hours, html_path, open_browser, drift_reference, from_archive) -> None:
    """Live evaluation: count, RMSE, MAE and bias per model version and role, their trend per
    hour, shadow against production on the same rides, and this hour's drift."""
    import boto3

    if from_archive:
        from rides import evaluation_report
        from rides.archive import evaluate_archive

        names = StackNames.from_env()
        rows = evaluate_archive(
            boto3.client("s3"), names.model_bucket, names.predictions_stream, names.completions_stream
        )
        report = evaluation_report.build(evaluation_report.RowFigures(rows))
        click.echo(evaluation_report.format_table(report, hours))
        return

    from rides import evaluation_report
    from rides.stream.evaluation.drift import DriftCounter, load_reference
    from rides.stream.evaluation.store import EvaluationStore
    from rides.stream.model import ModelLoadError, read_metadata

    names = StackNames.from_env()
    dynamodb = boto3.client("dynamodb")
    store = EvaluationStore(dynamodb, names.evaluations_table)
    counter = None
    try:
        uri = drift_reference or _resolve_uri(f"{names.registered_model}@production")
        reference = load_reference(uri, read_metadata) if uri else {}
        counter = DriftCounter(dynamodb, names.evaluations_table, reference) if reference else None
    except (ModelLoadError, RidesError) as exc:
        click.echo(f"(no drift figures: {exc})", err=True)
    report = evaluation_report.build(store, counter)
    click.echo(evaluation_report.format_table(report, hours))
    if html_path or open_browser:
        import tempfile
        import webbrowser
        from pathlib import Path

        path = Path(html_path) if html_path else Path(tempfile.mkdtemp()) / "evaluation.html"
        path.write_text(evaluation_report.to_html(report))
        click.echo(f"report: {path}")
        if open_browser:
            webbrowser.open(path.resolve().as_uri())


@main.command(cls=UsesAWS)
@click.option("--every", default=None, help="Run again every period (30s, 10m) until Ctrl-C, like Firehose's buffer.")
def archive(every) -> None:
    """Archive the predictions, decisions and completions streams to the model bucket as parquet
    by arrival hour (what Firehose does on AWS), from where the last run stopped."""
    import boto3

    from rides.incremental_scoring import parse_period, run_every
    from rides.local.archiver import archive_streams
    from rides.settings import state_dir

    names = StackNames.from_env()
    streams = {
        names.predictions_stream: "predictions",
        names.decisions_stream: "decisions",
        names.completions_stream: "completions",
    }
    kinesis, s3 = boto3.client("kinesis"), boto3.client("s3")

    def once() -> None:
        done = archive_streams(kinesis, s3, names.model_bucket, streams, state_dir() / "archive")
        click.echo(
            ", ".join(f"{stream} {n:,}" for stream, n in done.items())
            + f" records archived to s3://{names.model_bucket}/archive/"
        )

    if every:
        run_every(parse_period(every), once)
    else:
        once()


def _resolve_uri(ref: str) -> str | None:
    from rides.registry import ModelNotFound, parse_model_ref, resolve

    try:
        return resolve(*parse_model_ref(ref)).uri
    except ModelNotFound:
        return None


@main.command(cls=UsesAWS)
@click.option("--limit", type=int, default=None, help="At most this many rides.")
@click.option("--done", is_flag=True, help="Remove the listed rides from the queue (they were reviewed).")
@click.option("--queue-url", default=None, help="The review queue (default: the stack's ride-review).")
@click.option("--as-json", is_flag=True, help="One decision record per line.")
def review(limit, done, queue_url, as_json) -> None:
    """Rides the decision service decided `review`, with their flags and predictions. They stay
    queued (for the next reviewer) unless --done."""
    import boto3

    from rides.recovery import delete, peek, release

    sqs = boto3.client("sqs")
    url = queue_url or sqs.get_queue_url(QueueName=StackNames.from_env().review_queue)["QueueUrl"]
    messages = peek(sqs, url, limit=limit)
    # The decision service may queue a decision twice (a retry after the queue failed): one per decision_id.
    unique = list({m.body.get("decision_id"): m for m in messages}.values())
    if done:
        for message in messages:
            delete(sqs, url, message)
    else:
        release(sqs, url, messages)
    if as_json:
        for message in unique:
            click.echo(json.dumps(message.body))
        return
    click.echo(f"{len(unique)} rides to review" + (" (removed from the queue)" if done else ""))
    for message in unique:
        body = message.body
        predicted = ", ".join(
            f"{p['field']} {p['value']:.2f} (v{p['version']})" for p in (body.get("predictions") or {}).values()
        )
        click.echo(f"- ride {body.get('ride_id')}: {', '.join(body.get('flags') or [])} [{body.get('reason')}]")
        click.echo(f"    {predicted}")


@main.command(cls=UsesAWS)
@click.option("--dead-letters", "letters", is_flag=True, help="Re-send dead letters instead of failed batches.")
@click.option("--matching", default=None, help="Only dead letters whose reason contains this text.")
@click.option(
    "--to",
    "target",
    type=click.Choice(["local", "lambda"]),
    default="local",
    show_default=True,
    help="Failed batches: through the local handlers or by invoking the Lambda that gave up.",
)
@click.option("--limit", type=int, default=None, help="At most this many messages.")
def redrive(letters, matching, target, limit) -> None:
    """Replay failed batches from the stream through their function again (while the stream
    holds them), or re-send dead letters to their stream after a fix."""
    import boto3

    from rides import recovery

    names = StackNames.from_env()
    sqs, kinesis = boto3.client("sqs"), boto3.client("kinesis")
    if letters:
        result = recovery.redrive_dead_letters(
            sqs,
            kinesis,
            _queue_url(sqs, "dead-letters"),
            streams={"events": names.input_stream, "predictions": names.predictions_stream},
            matching=matching,
            limit=limit,
        )
        click.echo(json.dumps(result))
        return
    invoke = recovery.lambda_invoker(boto3.client("lambda")) if target == "lambda" else _local_invoker(sqs, names)
    result = recovery.redrive_failed_batches(
        sqs, kinesis, _queue_url(sqs, "failed-batches"), invoke, region=kinesis.meta.region_name, limit=limit
    )
    click.echo(json.dumps(result.as_dict()))
    if result.kept:
        raise click.ClickException(f"{len(result.kept)} failed batches stay queued: " + "; ".join(result.kept[:5]))


def _local_invoker(sqs, names: StackNames):
    from rides.local.runner import LambdaContext
    from rides.local.services import LocalDeployment

    local = LocalDeployment.on_stack(sqs, names=names)
    handlers: dict = {}

    def invoke(pointer, event):
        if pointer.function_name not in handlers:
            handlers[pointer.function_name] = local.handler(pointer.function_name)
        return handlers[pointer.function_name](event, LambdaContext(pointer.function_name, 60, "local"))

    return invoke


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


# -- web -------------------------------------------------------------------------------------------
@main.command(cls=UsesAWS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option(
    "--model",
    default="ride-duration-quick@production",
    show_default=True,
    help="The quick model: NAME@ALIAS or NAME/VERSION; MODEL_URI wins when set.",
)
def serve(host, port, workers, model) -> None:
    """The web service: POST /predict (quick answer; with consent also the stream), GET
    /predictions/{ride_id}[?wait=], GET /health, docs at /docs. API keys: rides api-key."""
    from rides import web_auth
    from rides.web import main as run_server

    web_auth.from_env()  # no keys outside the local stack: one clear line, before uvicorn starts
    os.environ.update({"RIDES_SERVE_MODEL": model, "HOST": host, "PORT": str(port), "WEB_WORKERS": str(workers)})
    run_server()


@main.command("api-key")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["predict", "stream", "read"]),
    help="What the key may do (repeatable; default all three).",
)
def api_key(name, scopes) -> None:
    """Make an API key for the web service: prints the key (give it to the client) and the entry
    for RIDES_API_KEYS or the API-keys secret (only its hash)."""
    import json

    from rides.web_auth import SCOPES, new_key

    key, entry = new_key(name, scopes or SCOPES)
    click.echo(f"key:   {key}")
    click.echo(f"entry: {json.dumps(entry)}")


# -- batch ---------------------------------------------------------------------------------------
@main.command()
@click.option("--month", default="2021-02", show_default=True, help="TLC month (YYYY-MM), parquet file or s3:// URI.")
@click.option("-n", "--count", type=int, default=None, help="How many rows (default: the whole month).")
@click.option("--skip", type=int, default=0, show_default=True, help="Start at this row of the month.")
@click.option("--rate", type=float, default=None, help="Rows per second (default: as fast as possible).")
@click.option(
    "--database-url", default=None, help="SQLAlchemy URL (default: RIDES_DATABASE_URL or SQLite under .rides)."
)
def load(month, count, skip, rate, database_url) -> None:
    """Insert rides from a TLC month into the rides table, the batch job's source. Ride ids are
    `<file>:<row>`, so loading the same rows again adds nothing."""
    _load_rides(month, count, skip, rate, database_url)


def _load_rides(month, count, skip, rate, database_url) -> None:
    import time

    from rides.ride_source import load_rides
    from rides.scoring import default_database_url

    url = database_url or default_database_url()
    if not rate:
        summary = load_rides(url, month, limit=count, skip=skip)
        rows, inserted, seconds = summary.rows, summary.inserted, summary.seconds
    else:  # a chunk every 0.1 s, to stand for rides arriving while the job runs
        step = max(1, int(rate / 10))
        rows = inserted = 0
        started = time.monotonic()
        while count is None or rows < count:
            summary = load_rides(url, month, limit=step if count is None else min(step, count - rows), skip=skip + rows)
            if not summary.rows:
                break
            rows, inserted = rows + summary.rows, inserted + summary.inserted
            time.sleep(max(0.0, rows / rate - (time.monotonic() - started)))
        seconds = time.monotonic() - started
    click.echo(f"{month}: {rows:,} rows read, {inserted:,} new rides in {seconds:.1f}s")


@main.command(cls=UsesAWS)
@click.option("--month", "months", multiple=True, help="YYYY-MM (repeatable).")
@click.option("--months", "month_span", default=None, help="A backfill range, e.g. 2023-01:2023-03.")
@click.option("--input", "inputs", multiple=True, help="A parquet file or s3:// URI (repeatable).")
@click.option("--model", default="ride-duration@production", show_default=True, help="NAME@ALIAS or NAME/VERSION.")
@click.option("--model-uri", default=None, help="Score with the model at this location instead (MODEL_URI).")
@click.option("--output", default=None, help="Output directory (local or s3://); one per input.")
@click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL (default: RIDES_DATABASE_URL or SQLite under .rides); '' to skip the database.",
)
@click.option("--from-db", "from_db", is_flag=True, help="Score the rides table's rows newer than the watermark.")
@click.option(
    "--source-url", default=None, help="With --from-db: the rides table's database (default: --database-url)."
)
@click.option("--job", default=None, help="With --from-db: whose watermark (default: the model's name).")
@click.option("--batch-rows", type=int, default=None, help="Rows per batch (one transaction with --from-db).")
@click.option("--every", default=None, help="With --from-db: run again every period (30s, 10m, 1h) until Ctrl-C.")
def score(
    months, month_span, inputs, model, model_uri, output, database_url, from_db, source_url, job, batch_rows, every
) -> None:
    """Batch scoring: new rides from the rides table (--from-db), or TLC months → predictions
    parquet + database rows (backfills). Both idempotent and resumable."""
    from rides.scoring import month_range
    from rides.scoring import score as run
    from rides.serving import load_serving_model

    if from_db:
        if months or month_span or inputs or output:
            raise click.UsageError("--from-db reads the rides table: leave out --month, --months, --input and --output")
        _score_from_db(load_serving_model(model, model_uri), database_url, source_url, job, batch_rows, every)
        return
    if every:
        raise click.UsageError("--every runs the incremental job: use it with --from-db")
    sources = list(months) + list(inputs)
    if month_span:
        first, _, last = month_span.partition(":")
        sources += month_range(first, last or first)
    if not sources:
        raise click.UsageError("give --month, --months or --input")
    if output and len(sources) > 1:
        raise click.UsageError("--output names one directory; leave it out when scoring several inputs")
    loaded = load_serving_model(model, model_uri)
    for source in sources:
        summary = run(source, loaded, output=output, database_url=database_url, **_batch_rows(batch_rows))
        click.echo(
            f"{source}: {summary.rows_in:,} rows in, {summary.scored:,} scored, "
            f"{sum(summary.skipped.values()):,} skipped, {summary.rows_per_s:,.0f} rows/s "
            f"({summary.parts_written} parts written, {summary.parts_resumed} resumed, "
            f"{summary.parts_replaced} replaced as computed from other input or model)"
        )
        for reason, n in sorted(summary.skipped.items()):
            click.echo(f"  skipped {n:,}: {reason}")
        click.echo(
            f"  RMSE {summary.rmse:.3f} MAE {summary.mae:.3f} min against {summary.compared:,} actual "
            f"durations (1-60 min); model {loaded.name} v{loaded.version}"
        )
        click.echo(f"  parquet: {summary.output}")


def _batch_rows(batch_rows) -> dict:
    return {"batch_rows": batch_rows} if batch_rows else {}


def _score_from_db(loaded, database_url, source_url, job, batch_rows, every) -> None:
    from rides.incremental_scoring import parse_period, run_every, score_new_rides
    from rides.scoring import default_database_url

    url = database_url or default_database_url()

    def once() -> None:
        summary = score_new_rides(url, loaded, source_url=source_url, job=job, **_batch_rows(batch_rows))
        click.echo(
            f"{summary.job}: {summary.rows_in:,} new rides "
            f"(ids {summary.watermark_before + 1:,}-{summary.watermark:,}), "
            f"{summary.scored:,} scored, {sum(summary.skipped.values()):,} skipped, {summary.batches} batches, "
            f"{summary.rows_per_s:,.0f} rows/s; watermark {summary.watermark:,}; model {loaded.name} v{loaded.version}"
            if summary.rows_in
            else f"{summary.job}: no new rides after {summary.watermark:,}"
        )
        for reason, n in sorted(summary.skipped.items()):
            click.echo(f"  skipped {n:,}: {reason}")

    if not every:
        once()
        return
    try:
        period = parse_period(every)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    click.echo(f"scoring new rides every {every}; Ctrl-C stops")
    try:
        run_every(period, once)
    except KeyboardInterrupt:
        click.echo("stopped")


@main.command()
@click.option("-n", "--rides", type=int, default=20_000, show_default=True)
@click.option("--produce-seconds", type=float, default=None, help="Spread the rides over this long (default: 400/s).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--workdir", default=None, help="Logs and state (default: .rides/chaos).")
def chaos(rides, produce_seconds, seed, workdir) -> None:
    """A fault-injection run on a private emulator, then a ledger of every record."""
    import shutil
    from pathlib import Path

    from rides.local.chaos import FAULT_PLANS, ChaosSettings, run_chaos
    from rides.settings import state_dir

    seconds = produce_seconds or max(30.0, rides / 400)
    settings = ChaosSettings(
        rides=rides, produce_seconds=seconds, fault_seconds=seconds / (2 * len(FAULT_PLANS)), seed=seed
    )
    folder = Path(workdir) if workdir else state_dir() / "chaos"
    shutil.rmtree(folder, ignore_errors=True)
    result = run_chaos(settings, folder, say=lambda text: click.echo(f"==> {text}"))
    click.echo(result.format())
    if not result.after_redrive.complete:
        raise click.ClickException(f"records unaccounted for; logs in {folder}")


# -- the demo --------------------------------------------------------------------------------
@main.command()
@click.option("-n", "--events", type=int, default=10_000, show_default=True)
@click.option("--rate", type=float, default=None)
def demo(events, rate) -> None:
    """The whole flow on a private emulator, then a summary (what `make run` runs)."""
    from rides.local.demo import format_summary, run_demo

    result = run_demo(events, rate=rate)
    click.echo(format_summary(result))
    if result.lost:
        raise click.ClickException(f"{result.lost} rides have no prediction")


if __name__ == "__main__":
    main()
