"""The layering rules of ARCHITECTURE.md, read from the import graph (no store needed).

- `app.domain` imports nothing of Lethe's outside `app.domain`;
- `app.models` (the ORM rows services may read and change; a package) imports only `app.domain`
  and itself;
- `app.services` and `app.ports` import no `app.stores` module;
- `app.http`, `app.cli` and `jobs` import no `app.stores` module (they reach stores through
  `app.bootstrap` and the services) and no ORM model (services answer them typed results);
- nothing outside `app.stores` touches a unit of work's SQLAlchemy session.

Imports under `if TYPE_CHECKING:` count too: a type names the layer it depends on.

There are no exceptions: any import that breaks a rule fails the test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]



def modules() -> Iterator[tuple[str, Path]]:
    for base in ("app", "jobs"):
        for path in sorted((ROOT / base).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(module: str, path: Path) -> set[str]:
    """Every Lethe module `module` imports (absolute names; `from x import y` gives x.y when
    y is a module, else x)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {name for name in found if name.split(".")[0] in ("app", "jobs")}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


def broken_rule(module: str, target: str) -> str | None:
    """Which rule importing `target` from `module` breaks, if any."""
    if _within(module, "app.domain") and not _within(target, "app.domain"):
        return "domain imports only domain"
    if _within(module, "app.services") and _within(target, "app.stores"):
        return "services import no store"
    if _within(module, "app.models") and not (_within(target, "app.domain") or _within(target, "app.models")):
        return "models import only domain"
    if _within(module, "app.ports") and _within(target, "app.stores"):
        return "ports import no store"
    if any(_within(module, layer) for layer in ("app.http", "app.cli", "jobs")):
        if _within(target, "app.stores"):
            return "http, cli and jobs reach stores only through app.bootstrap"
        if _within(target, "app.models"):
            return "http, cli and jobs get typed results from services, not ORM rows"
    return None


def outward_imports() -> set[tuple[str, str]]:
    return {(module, target) for module, path in modules() for target in imported(module, path)
            if broken_rule(module, target)}


def session_uses() -> list[str]:
    """`<something>.session` attribute reads outside app/stores (the unit of work's session)."""
    found = []
    for module, path in modules():
        if _within(module, "app.stores"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "session":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_graph_reader_sees_imports() -> None:
    """The reader itself: it must find what a module plainly imports, or the rules pass vacuously."""
    found = imported("app.services.deletion", ROOT / "app/services/deletion.py")
    assert "app.domain.requests" in found and "app.ports" in found
    assert broken_rule("app.domain.holds", "app.models") is not None
    assert broken_rule("app.models", "app.stores.sql.engine") is not None
    assert broken_rule("app.models.people", "app.services.keys") is not None
    assert broken_rule("app.models.people", "app.models.base") is None
    assert broken_rule("app.http.holds", "app.models.holds") is not None
    assert broken_rule("app.services.holds", "app.models") is None
    assert broken_rule("app.services.holds", "app.stores.sql.uow") is not None
    assert broken_rule("jobs.retention", "app.models") is not None
    assert broken_rule("jobs.retention", "app.bootstrap") is None
    assert broken_rule("app.services.holds", "app.domain.holds") is None
    assert broken_rule("app.ports", "app.stores.sql.subjects") is not None
    assert broken_rule("app.ports.repositories", "app.stores.sql.subjects") is not None


def test_no_import_points_outward() -> None:
    found = sorted(outward_imports())
    assert not found, "imports against the layering rules:\n" + "\n".join(
        f"  {m} -> {t}  ({broken_rule(m, t)})" for m, t in found)


def test_no_session_outside_stores() -> None:
    assert session_uses() == []
