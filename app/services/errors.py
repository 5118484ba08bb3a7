"""Errors the services raise. They say what went wrong in the terms of the use case; the HTTP
layer alone maps each to a status code (app.http.errors.STATUS_OF)."""


class ServiceError(Exception):
    """A refusal a caller can act on; its message says what is wrong."""


class NotFound(ServiceError):
    """The thing named does not exist (or is not the caller's to see)."""


class Conflict(ServiceError):
    """The thing exists but its state refuses the change (e.g. restoring a purged request)."""


class Unprocessable(ServiceError):
    """Well-formed input that cannot be applied (e.g. an Idempotency-Key reused with another body)."""


class InvalidInput(ServiceError):
    """Input that is wrong in itself; the message names the field."""


class AlreadyExists(ServiceError):
    """Creating something whose name is taken."""


class Unavailable(ServiceError):
    """A store Lethe depends on is down: nothing was done; the caller should retry."""

    retry_after = 5  # seconds


class Unauthenticated(ServiceError):
    """No valid credential (a webhook signature or secret URL that does not verify)."""


class Forbidden(ServiceError):
    """A valid credential that may not do this (e.g. a webhook auth method the project refuses)."""


class Broken(ServiceError):
    """Lethe itself cannot work as configured (an operator must act); never the caller's fault."""
