"""Where signed audit checkpoints are kept outside the SQL store: a JSON-lines file (0600 in
a 0700 directory) that operators also ship elsewhere (the logs carry each checkpoint too)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class CheckpointFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoint: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(checkpoint, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[Any]:
        """Every checkpoint kept, oldest first ([] before the first)."""
        return read_checkpoints(self.path) if self.path.exists() else []


def read_checkpoints(path: Path) -> list[Any]:
    """A checkpoint file: one JSON object, or JSON lines (ValueError naming the bad line)."""
    text = path.read_text()
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return [whole]
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}: line {number} is not JSON") from None
    return items
