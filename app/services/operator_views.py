"""What the operator commands print (`lethe project create`, `lethe officer list`, `lethe keys
rotate`...), as JSON: the answers of the services behind them. The HTTP answers are in
app.services.views."""

from __future__ import annotations

import msgspec


class ProjectCreated(msgspec.Struct):
    """A new project's credentials, shown this once."""

    project: str
    api_key: str
    webhook_token: str
    webhook_secret: str
    webhook_url_path: str


class ProjectOut(msgspec.Struct):
    project: str
    region: str
    status: str  # active | offboarding | offboarded
    created_at: str


class OfficerCreated(msgspec.Struct):
    officer: str
    token: str  # shown this once


class OfficerOut(msgspec.Struct):
    officer: str
    projects: list[str]
    created_at: str
    revoked_at: str | None


class OfficerRevoked(msgspec.Struct):
    officer: str
    revoked_at: str


class ProjectStatusOut(msgspec.Struct):
    project: str
    status: str


class SigningSecretRotated(msgspec.Struct):
    project: str
    webhook_secret: str  # shown this once
    previous_valid_until: str | None  # the replaced secret still verifies until then


class WebhookUrlRotated(msgspec.Struct):
    project: str
    webhook_url_path: str  # shown this once
    previous_valid_until: str | None


class WebhookAuthOut(msgspec.Struct):
    project: str
    webhook_auth: list[str]  # signed | bearer | url


class KeysRotated(msgspec.Struct):
    kek_version: int
    rewrapped: int
