"""The JSON summary every job prints: what it processed, held back, failed, per store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class JobSummary:
    job: str
    now: datetime
    processed: int = 0
    held: int = 0
    failed: int = 0
    stores: dict[str, int] = field(default_factory=dict)
    purged: int = 0
    # due work another live run holds: [{"by", "until", "requests"}] (say why nothing ran)
    leased_elsewhere: list[dict[str, Any]] = field(default_factory=list)

    def add(self, counts: Mapping[str, int]) -> None:
        """Add rows per store (e.g. {"sql.messages": 3}) to what the run has counted so far."""
        for store, n in counts.items():
            self.stores[store] = self.stores.get(store, 0) + n

    def count(self, evidence: Mapping[str, Mapping[str, int]]) -> None:
        """Add an erasure's evidence (store -> subject -> rows)."""
        self.add({store: sum(counts.values()) for store, counts in evidence.items()})

    def as_dict(self) -> dict[str, Any]:
        out = {"job": self.job, "now": self.now.isoformat(), "processed": self.processed,
               "held": self.held, "failed": self.failed, "purged": self.purged, "stores": self.stores}
        if self.leased_elsewhere:
            out["leased_elsewhere"] = self.leased_elsewhere
        return out
