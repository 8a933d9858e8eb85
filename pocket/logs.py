"""How Pocket's commands log: readable text by default, or (POCKET_LOG_FORMAT=json)
one JSON object per line, for every logger (Pocket's, waitress's, the library's)
and for what would otherwise reach stderr unformatted (warnings, uncaught
exceptions, the commands' own one-line messages)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every record has; anything else on a record was given as extra= (the
# access log's fields) and becomes a key of its own.
STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
log = logging.getLogger("pocket")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, its extra
    fields, and the exception's traceback if any, all on one line."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD:
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only (json's default): no character in a message, not even
        # U+2028, can split the line for whatever reads it.
        return json.dumps(entry, default=str)


def configure(level: str, log_format: str) -> None:
    """Sends every logger's lines to stderr, as text or as JSON."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)
        sys.excepthook = log_uncaught
        threading.excepthook = log_uncaught_in_thread
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def say(message: str, *, error: bool = False) -> None:
    """A line for the operator (where the command serves, why it cannot start):
    printed, or logged when every line must be JSON."""
    if json_lines():
        log.log(logging.ERROR if error else logging.INFO, message)
    else:
        print(message, file=sys.stderr if error else sys.stdout, flush=True)


def json_lines() -> bool:
    """Whether log lines are JSON (as configure set them)."""
    root = logging.getLogger()
    return any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)


def log_uncaught(
    kind: type[BaseException],
    error: BaseException,
    traceback: TracebackType | None,
) -> None:
    """sys.excepthook: an uncaught exception, as a log line."""
    log.critical("Uncaught %s", kind.__name__, exc_info=(kind, error, traceback))


def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: an exception that ended a thread, as a log line."""
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    log.error(
        "Thread %s ended by %s",
        thread,
        args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
