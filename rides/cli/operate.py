"""What an operator runs against AWS: smoke, dead-letters, evaluate, archive, review, redrive."""

from __future__ import annotations

import json
import os

import click

from rides import RidesError
from rides.cli.base import UsesAWS, main
from rides.settings import StackNames


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

    from rides.operate.smoke import Expected, smoke_test

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

    from rides.operate.recovery import BatchPointer, decoded_data, make_visible, peek, reason_counts

    sqs = boto3.client("sqs")
    url = _queue_url(sqs, queue)
    messages = peek(sqs, url, limit=limit)
    make_visible(sqs, url, messages)
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
        from rides.operate import evaluation_report
        from rides.operate.archive import evaluate_archive

        names = StackNames.from_env()
        rows = evaluate_archive(
            boto3.client("s3"), names.model_bucket, names.predictions_stream, names.completions_stream
        )
        report = evaluation_report.build(evaluation_report.RowFigures(rows))
        click.echo(evaluation_report.format_table(report, hours))
        return

    from rides.operate import evaluation_report
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

    from rides.batch.incremental import parse_period, run_every
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
    from rides.models.registry import ModelNotFound, parse_model_ref, resolve

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

    from rides.operate.recovery import delete, make_visible, peek

    sqs = boto3.client("sqs")
    url = queue_url or sqs.get_queue_url(QueueName=StackNames.from_env().review_queue)["QueueUrl"]
    messages = peek(sqs, url, limit=limit)
    # The decision service may queue a decision twice (a retry after the queue failed): one per decision_id.
    unique = list({m.body.get("decision_id"): m for m in messages}.values())
    if done:
        for message in messages:
            delete(sqs, url, message)
    else:
        make_visible(sqs, url, messages)
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

    from rides.operate import recovery

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
    from rides.local.lambda_service import LambdaContext
    from rides.local.services import LocalDeployment

    local = LocalDeployment.on_stack(sqs, names=names)
    handlers: dict = {}

    def invoke(pointer, event):
        if pointer.function_name not in handlers:
            handlers[pointer.function_name] = local.handler(pointer.function_name)
        return handlers[pointer.function_name](event, LambdaContext(pointer.function_name, 60, "local"))

    return invoke
