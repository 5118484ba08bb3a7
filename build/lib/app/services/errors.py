"""Errors the services raise; the HTTP layer maps each to one status code."""


class ServiceError(Exception):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unprocessable(ServiceError):
    status_code = 422


class InvalidInput(ServiceError):
    status_code = 400


class AlreadyExists(ServiceError):
    status_code = 409


class Unavailable(ServiceError):
    """A store Lethe depends on is down: nothing was done; the caller should retry."""

    status_code = 503
    retry_after = 5


class Unauthenticated(ServiceError):
    """No valid credential (a webhook signature or secret URL that does not verify)."""

    status_code = 401


class Forbidden(ServiceError):
    """A valid credential that may not do this (e.g. a webhook auth method the project refuses)."""

    status_code = 403
