import tomllib
from pathlib import Path

import pytest

from app.domain.policy import Policy, PolicyError, parse_policy
from app.services.policies import PolicyBook

ROOT = Path(__file__).resolve().parents[2]


def test_default_file_parses_to_the_documented_numbers() -> None:
    policy = parse_policy(tomllib.loads((ROOT / "policies" / "default.toml").read_text()))
    assert policy == Policy(grace_days=30, retention_months=13, message_feed_days=30,
                            dead_letter_retention_days=30, store_ip=False, hold_release_delay_hours=0)


def test_project_override_changes_one_number(tmp_path: Path) -> None:
    (tmp_path / "projects").mkdir()
    (tmp_path / "default.toml").write_text("[lifecycle]\ngrace_days = 30\n")
    (tmp_path / "projects" / "acme.toml").write_text("[lifecycle]\ngrace_days = 7\n")
    book = PolicyBook.load(tmp_path)
    assert book.for_project("acme").grace_days == 7
    assert book.for_project("other").grace_days == 30


@pytest.mark.parametrize(("doc", "message"), [
    ({"lifecycle": {"grace_dayz": 1}}, "unknown key lifecycle.grace_dayz"),
    ({"lifecycle": {"grace_days": "30"}}, "lifecycle.grace_days must be int"),
    ({"lifecycle": {"store_ip": 1}}, "lifecycle.store_ip must be bool"),
    ({"lifecycle": {"grace_days": -1}}, "must not be negative"),
    ({"lifecycle": 3}, "must be a table"),
])
def test_invalid_policy_names_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(doc, origin="f.toml")


def test_unreadable_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text("[lifecycle\n")
    with pytest.raises(PolicyError, match=r"default\.toml"):
        PolicyBook.load(tmp_path)


@pytest.mark.parametrize(("default", "project", "message"), [
    ("[lifecycle]\ngrace_days = 30\n[lifecyle]\nx = 1\n", None, r"default\.toml: 'lifecyle' is not a section"),
    ("[lifecycle]\ngrace_days = 30\n", "[lifecyle]\ngrace_days = 7\n", r"acme\.toml: 'lifecyle' is not a section"),
    ("[lifecycle]\ngrace_days = 30\n", "grace_days = 7\n", r"acme\.toml: 'grace_days' is not a section"),
    ("[lifecycle]\ngrace_days = 30\n", "[limits]\npartner_requests_per_second = 5\n",
     r"acme\.toml: 'limits' is not a section this file may hold \(it may hold \[lifecycle\]\)"),
    ("[lifecycle]\ngrace_days = 30\n", '[datamap."sql.x"]\ny = "not_personal"\n', r"acme\.toml: 'datamap'"),
])
def test_a_section_that_would_be_ignored_is_refused_naming_the_file(tmp_path: Path, default: str,
                                                                    project: str | None, message: str) -> None:
    (tmp_path / "default.toml").write_text(default)
    if project is not None:
        (tmp_path / "projects").mkdir()
        (tmp_path / "projects" / "acme.toml").write_text(project)
    with pytest.raises(PolicyError, match=message):
        PolicyBook.load(tmp_path)
