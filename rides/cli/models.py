"""The model lifecycle's commands: train, promote (with the gate), resolve, models report/export/import, release."""

from __future__ import annotations

import json

import click

from rides.cli.base import UsesAWS, main
from rides.settings import CONSUMERS, StackNames


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
    from rides.models.registry import log_training
    from rides.models.training import train as fit

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
    from rides.models.promote import promote as run
    from rides.models.registry import ModelNotFound, PromotionError, resolve

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
    key = model.name if role == "production" else f"{model.name}@shadow"
    click.echo(f'terraform: models = {{ "{key}" = {{ uri = "{model.uri}", version = "{model.version}" }} }}')


def _gate(name, candidate, serving, min_rides, max_worse):
    import boto3

    from rides.models import promotion_gate
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
    from rides.models.registry import ModelNotFound, parse_model_ref
    from rides.models.registry import resolve as lookup

    try:
        found = lookup(*parse_model_ref(model))
    except ModelNotFound:
        if not missing_ok:
            raise
        click.echo("{}")
        return
    click.echo(json.dumps({"name": found.name, "version": found.version, "uri": found.uri}))


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

    from rides.models.report import format_rows, model_rows
    from rides.models.report import write_readme as write

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

    from rides.models.transfer import export_models

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

    from rides.models.transfer import import_models

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

    from rides.models import release as releasing

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
