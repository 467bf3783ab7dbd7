"""Batch scoring's commands: load (rides into the database), score."""

from __future__ import annotations

import click

from rides.cli.base import UsesAWS, main


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

    from rides.batch.ride_source import load_rides
    from rides.batch.scoring import default_database_url

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
    from rides.batch.scoring import month_range
    from rides.batch.scoring import score as run
    from rides.models.serving import load_serving_model

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
    from rides.batch.incremental import parse_period, run_every, score_new_rides
    from rides.batch.scoring import default_database_url

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
