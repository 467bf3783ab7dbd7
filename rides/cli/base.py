"""The `rides` group and what every command shares (the error handling, the local stack's
endpoint for commands that talk to AWS)."""

from __future__ import annotations

import logging
import os

import click

from rides import RidesError


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
