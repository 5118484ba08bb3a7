"""Lethe as a wheel (issue 9, "packaging"): built from this checkout, installed into a fresh
virtualenv, `lethe migrate`, `lethe project create` and `lethe policy check` work in an empty
directory: the wheel carries the migrations and the default policies, and the console's
templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_") and k != "VIRTUAL_ENV"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
def test_a_wheel_install_migrates_and_runs_from_an_empty_directory(tmp_path: Path) -> None:
    source, wheels, venv, work = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    # built from a copy: setuptools writes build/ and *.egg-info/ beside the sources it builds
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", "var", "build", "dist", "*.egg-info", ".git", "__pycache__", ".*_cache"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)], tmp_path)
    (wheel,) = wheels.glob("lethe-*.whl")
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path)
    lethe = str(venv / "bin" / "lethe")
    assert "schemas are at head" in run([lethe, "migrate"], work).stderr
    assert json.loads(run([lethe, "project", "create", "acme"], work).stdout)["project"] == "acme"
    check = json.loads(run([lethe, "policy", "check"], work).stdout)
    assert check["ok"] and check["directory"] == str(venv / "share" / "lethe" / "policies")
    assert list((venv / "lib").glob("python3*/site-packages/app/http/templates/console/queue.html"))
    assert not (work / "alembic").exists() and not (work / "policies").exists()  # nothing borrowed from a checkout
