from collections.abc import Iterator

import msgspec
import pytest
from litestar.testing import TestClient

from app.bootstrap import Container
from app.http.app import create_app


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(create_app(container)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def keys(container: Container) -> dict[str, str]:
    """The platform's example project ("partner-prod"): its keys and an officer's token."""
    from tests.fixtures.platform import PROJECT

    keys: dict[str, str] = msgspec.to_builtins(container.accounts.create_project(PROJECT))
    keys["officer"] = container.accounts.create_officer("olga", [PROJECT]).token
    return keys
