import json

import structlog

from app.logging import REDACTED, drop_personal_fields, processors


def test_personal_fields_are_dropped_at_any_depth() -> None:
    event = drop_personal_fields(None, "info", {
        "event": "x", "user_id": "u-MARKER", "count": 3,
        "nested": {"user_name": "Jane MARKER", "ok": 1, "items": [{"ip": "10.0.0.1"}]},
    })
    assert event["user_id"] == REDACTED
    assert event["nested"]["user_name"] == REDACTED
    assert event["nested"]["items"][0]["ip"] == REDACTED
    assert event["count"] == 3 and event["nested"]["ok"] == 1


def test_rendered_log_line_has_no_marker(capsys) -> None:  # type: ignore[no-untyped-def]
    structlog.configure(processors=processors(), logger_factory=structlog.PrintLoggerFactory())
    try:
        structlog.get_logger().info("deletion", user_id="u-MARKER", text="hello MARKER", requests=2)
    finally:
        structlog.reset_defaults()
    line = capsys.readouterr().out
    assert "MARKER" not in line
    assert json.loads(line)["requests"] == 2
