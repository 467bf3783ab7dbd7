"""The local stack's commands: the emulator (stack up/down/status), the chaos run, the demo."""

from __future__ import annotations

import os
import sys

import click

from rides.cli.base import main
from rides.settings import StackNames


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
        from rides.models.promote import read_local_model

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
