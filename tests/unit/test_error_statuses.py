"""Services raise errors that say what went wrong; HTTP alone maps them to status codes."""

from __future__ import annotations

import pytest

from app.http.errors import STATUS_OF, status_of
from app.services import errors
from app.services.errors import ServiceError
from app.services.keys import KeyringError
from app.services.outbox import OutboxFull


@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidInput, 400), (errors.Unauthenticated, 401), (errors.Forbidden, 403), (errors.NotFound, 404),
    (errors.Conflict, 409), (errors.AlreadyExists, 409), (errors.Unprocessable, 422), (errors.Unavailable, 503),
    (OutboxFull, 503), (KeyringError, 500),
])
def test_each_service_error_has_its_status(error: type[ServiceError], status: int) -> None:
    assert status_of(error("why")) == status


def test_every_service_error_class_is_mapped() -> None:
    """A new error class must be given a status (or inherit one), not fall to a default."""
    def subclasses(cls: type[ServiceError]) -> set[type[ServiceError]]:
        return {c for s in cls.__subclasses__() for c in {s, *subclasses(s)}}

    unmapped = [c.__name__ for c in subclasses(ServiceError)
                if not any(base in STATUS_OF for base in c.__mro__)]
    assert unmapped == []
