"""Log lines as JSON (POCKET_LOG_FORMAT=json) and the two log settings."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pocket.config import ConfigurationError, LogSettings
from pocket.logs import JsonFormatter


def record(
    message: str, *args: object, exc_info: bool = False, **extra: object
) -> logging.LogRecord:
    """A record as a logger would make it, inside an except block if exc_info."""
    logger = logging.getLogger("pocket.test")
    info = sys.exc_info() if exc_info else None
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, args, info, extra=extra
    )


def test_a_line_is_one_json_object_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("Lag is %d events", 5))
    entry = json.loads(line)
    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "WARNING",
        "logger": "pocket.test",
        "message": "Lag is 5 events",
    }


def test_the_fields_given_to_a_line_become_keys_of_their_own() -> None:
    line = JsonFormatter().format(
        record("GET /health 200", request_id="r-1", status=200, duration_ms=0.5)
    )
    entry = json.loads(line)
    assert (entry["request_id"], entry["status"], entry["duration_ms"]) == (
        "r-1",
        200,
        0.5,
    )


def test_a_field_cannot_replace_the_line_s_own_keys() -> None:
    entry = json.loads(JsonFormatter().format(record("real", level="forged")))
    assert entry["level"] == "WARNING"


def test_a_traceback_and_odd_characters_stay_on_one_ascii_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        made = record("Failed\u2028twice: caf\xe9", exc_info=True)
    line = JsonFormatter().format(made)
    assert line.isascii()
    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["message"] == "Failed\u2028twice: caf\xe9"
    assert "ValueError: bad\nvalue" in entry["exception"]


def test_log_settings_default_to_readable_text_at_info() -> None:
    assert LogSettings.from_environ({}) == LogSettings("INFO", "text")
    chosen = {"POCKET_LOG_LEVEL": "debug", "POCKET_LOG_FORMAT": "JSON"}
    assert LogSettings.from_environ(chosen) == LogSettings("DEBUG", "json")


@pytest.mark.parametrize(
    ("name", "value"),
    [("POCKET_LOG_FORMAT", "yaml"), ("POCKET_LOG_LEVEL", "LOUD")],
)
def test_log_settings_that_do_not_exist_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        LogSettings.from_environ({name: value})
