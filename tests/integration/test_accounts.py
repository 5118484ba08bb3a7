"""Projects and officers as operators create them: what does not fit is refused in a sentence."""

from __future__ import annotations

import pytest

from app.bootstrap import Container
from app.services.errors import AlreadyExists, InvalidInput


@pytest.mark.parametrize(("name", "region", "said"), [
    ("", "eu", "project name must be 1-100 characters"),
    ("p" * 101, "eu", "project name must be 1-100 characters"),
    ("acme", "", "region must be 1-20 characters"),
    ("acme", "r" * 21, "region must be 1-20 characters"),
])
def test_a_project_that_does_not_fit_its_columns_is_refused(container: Container, name: str, region: str,
                                                            said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        container.accounts.create_project(name, region)
    assert container.accounts.list_projects() == []


@pytest.mark.parametrize("name", ["", "o" * 101])
def test_an_officer_name_must_fit_too(container: Container, project: dict[str, str], name: str) -> None:
    with pytest.raises(InvalidInput, match="officer name must be 1-100 characters"):
        container.accounts.create_officer(name, ["acme"])
    assert container.accounts.list_officers() == []


def test_an_officer_created_twice_is_one_officer(container: Container, project: dict[str, str]) -> None:
    container.accounts.create_officer("olga", ["acme"])
    with pytest.raises(AlreadyExists, match="officer 'olga' already exists"):
        container.accounts.create_officer("olga", ["acme"])
    assert [o.officer for o in container.accounts.list_officers()] == ["olga"]
