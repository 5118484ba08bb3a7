"""Loads `policies/default.toml` and `policies/projects/<name>.toml` into Policy objects."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from app.domain.events import PropertyMap
from app.domain.policy import (
    Column,
    Limits,
    Policy,
    PolicyError,
    parse_datamap,
    parse_limits,
    parse_policy,
    property_map,
)


class PolicyBook:
    """The default policy and per-project overrides, read once at start-up."""

    def __init__(self, default: Policy, projects: dict[str, Policy] | None = None,
                 datamap: dict[tuple[str, str, str], Column] | None = None, limits: Limits | None = None) -> None:
        self.default = default
        self.projects = projects or {}
        self.datamap = datamap or {}
        self.properties: PropertyMap = property_map(self.datamap)  # where ingest puts each event property
        self.limits = limits or Limits()

    @classmethod
    def load(cls, directory: Path) -> PolicyBook:
        if not directory.is_dir():
            problem = "is not a directory" if directory.exists() else "does not exist"
            raise PolicyError(f"policy directory {directory} {problem} (set LETHE_POLICY_DIR)")
        default_file = directory / "default.toml"
        if not default_file.exists() and not any((directory / "projects").glob("*.toml")):
            # an empty folder is a mistake (a wrong path, a volume not mounted), not a policy
            raise PolicyError(f"policy directory {directory} holds no policy (default.toml or projects/*.toml)")
        doc = _read(default_file, DEFAULT_SECTIONS) if default_file.exists() else {}
        default = parse_policy(doc, origin=str(default_file))
        projects: dict[str, Policy] = {}
        for path in sorted((directory / "projects").glob("*.toml")):
            projects[path.stem] = parse_policy(_read(path, PROJECT_SECTIONS), default, origin=str(path))
        map_file = default_file if "datamap" in doc else shipped_default()
        datamap = parse_datamap(_read(map_file) if map_file != default_file else doc, origin=str(map_file))
        return cls(default, projects, datamap, parse_limits(doc, origin=str(default_file)))

    def for_project(self, name: str) -> Policy:
        return self.projects.get(name, self.default)


DEFAULT_SECTIONS = frozenset({"lifecycle", "limits", "datamap"})  # policies/default.toml
PROJECT_SECTIONS = frozenset({"lifecycle"})  # projects/<name>.toml: limits and the data map are the default's


def shipped_default() -> Path:
    """Lethe's own policies/default.toml, whose data map a policy file without one uses: beside
    app/ in a checkout, under <prefix>/share/lethe/policies when installed from the wheel."""
    for directory in (Path(__file__).resolve().parents[2] / "policies",
                      Path(sys.prefix) / "share" / "lethe" / "policies"):
        if (directory / "default.toml").is_file():
            return directory / "default.toml"
    raise PolicyError("the policy file has no [datamap] and Lethe's own policies/default.toml was not found")


def _read(path: Path, sections: frozenset[str] = frozenset()) -> dict[str, object]:
    """A policy file, holding only `sections` (if given): a misspelled `[lifecyle]`, a key
    outside any section or a `[limits]` in a project's file would otherwise be ignored
    without a word, and the service would run on other rules than the operator wrote."""
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    if sections and (unknown := sorted(set(doc) - sections)):
        raise PolicyError(f"{path}: {', '.join(repr(k) for k in unknown)} is not a section this file may hold "
                          f"(it may hold {', '.join(f'[{s}]' for s in sorted(sections))})")
    return doc
