"""Where local state lives: the emulator's pid and log, runner checkpoints, the MLflow DB."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """RIDES_HOME, or `.rides` in the working directory (the project root under make)."""
    path = Path(os.environ.get("RIDES_HOME") or Path.cwd() / ".rides").absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path
