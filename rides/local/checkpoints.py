"""The local runner's checkpoints: per consumer and stream, the last sequence number done in each
shard, in a file (Lambda's event source mapping keeps them on its side)."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

log = logging.getLogger("rides.runner")


class CheckpointStore:
    """Last processed sequence number per shard, in one JSON file per stream and consumer."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.positions: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.positions = {}

    def get(self, shard_id: str) -> str | None:
        return self.positions.get(shard_id)

    def set(self, shard_id: str, sequence_number: str) -> None:
        self.positions[shard_id] = sequence_number
        self._write()

    def forget(self, shard_id: str) -> None:
        self.positions.pop(shard_id, None)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.positions))
        tmp.replace(self.path)


def checkpoint_file(folder: Path, stream_name: str, function_name: str, stream_arn: str, created) -> Path:
    """The checkpoints of one consumer on one stream, named by the stream's identity (its ARN
    and creation time, as the event source mapping is on AWS), not only by its name: a stream
    deleted and created again (a fresh emulator) numbers its records from the start again,
    and an old position would silently skip every record up to it."""
    created = created.isoformat() if isinstance(created, datetime) else str(created or "")
    identity = hashlib.sha256(f"{stream_arn}|{created}".encode()).hexdigest()[:12]
    path = folder / f"{stream_name}.{function_name}.{identity}.json"
    stale = [p for p in folder.glob(f"{stream_name}.{function_name}.*json") if p != path and p.suffix == ".json"]
    if stale and not path.exists():
        log.warning(
            "%s was created anew (%s): the checkpoints of %d earlier stream(s) by that name are not used (%s)",
            stream_name,
            created or "creation time unknown",
            len(stale),
            ", ".join(p.name for p in stale),
        )
    return path
