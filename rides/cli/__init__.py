"""The `rides` command line: the group (rides.cli.base) and the commands, by concern, each
module registering its own on it: local, models, stream, operate, batch, web."""

from rides.cli import batch, local, models, operate, stream, web  # noqa: F401  (they register)
from rides.cli.base import main

__all__ = ["main"]
