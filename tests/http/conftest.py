from collections.abc import Iterator

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
