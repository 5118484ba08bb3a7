"""Which project a caller means: the one rule that every officer route applies."""

from __future__ import annotations

import pytest

from app.services.accounts import Principal, Role
from app.services.errors import InvalidInput, NotFound

OFFICER = Principal(Role.OFFICER, "olga", {"p1": "acme", "p2": "globex"})
PARTNER = Principal(Role.PARTNER, "acme", {"p1": "acme"})


def test_no_project_named_means_all_of_the_tokens() -> None:
    assert OFFICER.scoped(None) == {"p1": "acme", "p2": "globex"}
    assert OFFICER.scoped("globex") == {"p2": "globex"}


def test_a_project_the_token_does_not_cover_is_not_found_whether_or_not_it_exists() -> None:
    with pytest.raises(NotFound, match="project initech not found"):
        OFFICER.scoped("initech")


def test_a_change_is_made_in_exactly_one_project() -> None:
    assert OFFICER.one("acme") == ("p1", "acme")
    assert PARTNER.one(None) == ("p1", "acme")  # the token's only project
    with pytest.raises(InvalidInput, match="project: required"):
        OFFICER.one(None)
    with pytest.raises(NotFound):
        PARTNER.one("globex")
