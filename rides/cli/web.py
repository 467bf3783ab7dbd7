"""The web service's commands: serve, api-key."""

from __future__ import annotations

import json
import os

import click

from rides.cli.base import UsesAWS, main


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
    from rides.web import auth as web_auth
    from rides.web.app import main as run_server

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

    from rides.web.auth import SCOPES, new_key

    key, entry = new_key(name, scopes or SCOPES)
    click.echo(f"key:   {key}")
    click.echo(f"entry: {json.dumps(entry)}")
