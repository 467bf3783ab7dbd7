"""rides: a streaming ML consumer for ride-hailing backends (see the README)."""


class RidesError(RuntimeError):
    """An error whose message is all a user needs (one line, no traceback): the CLI prints it
    and exits 1. Every error the project raises for a person to act on derives from it."""
