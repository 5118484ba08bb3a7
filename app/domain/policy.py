"""Policy value objects, parsed from the TOML files in `policies/` (pure: no file I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


class PolicyError(ValueError):
    """A policy document is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Policy:
    grace_days: int = 30
    retention_months: int = 13
    message_feed_days: int = 30
    dead_letter_retention_days: int = 30
    store_ip: bool = False
    hold_release_delay_hours: int = 0


_LIFECYCLE_KEYS = {f.name: f.type for f in fields(Policy)}


def parse_policy(doc: Mapping[str, Any], base: Policy | None = None, *, origin: str = "policy") -> Policy:
    """Read the `[lifecycle]` table of a policy document over `base` (the defaults)."""
    base = base or Policy()
    section = doc.get("lifecycle", {})
    if not isinstance(section, Mapping):
        raise PolicyError(f"{origin}: [lifecycle] must be a table")
    values = {f.name: getattr(base, f.name) for f in fields(Policy)}
    for key, value in section.items():
        if key not in _LIFECYCLE_KEYS:
            raise PolicyError(f"{origin}: unknown key lifecycle.{key}")
        expected = bool if _LIFECYCLE_KEYS[key] == "bool" else int
        if type(value) is not expected:
            raise PolicyError(f"{origin}: lifecycle.{key} must be {expected.__name__}, got {value!r}")
        if expected is int and value < 0:
            raise PolicyError(f"{origin}: lifecycle.{key} must not be negative")
        values[key] = value
    return Policy(**values)
