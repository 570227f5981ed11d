"""The usage log: one JSON line per interaction (who, what, which selection, how many milliseconds).

Configured here and only here: :func:`configure_usage_log` sends the ``kpisheet.usage`` logger to
a file or to standard error; everything else calls :func:`log_interaction`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

#: Name of the logger the usage lines go to.
USAGE_LOGGER = "kpisheet.usage"
#: Environment variable naming the usage log file when the app runs under ``panel serve``.
USAGE_LOG_ENV = "KPISHEET_USAGE_LOG"

logger = logging.getLogger(USAGE_LOGGER)


class JsonLineFormatter(logging.Formatter):
    """Formats a usage record as one JSON object: time, then the fields the record carries."""

    def format(self, record: logging.LogRecord) -> str:
        time = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        line = {"time": time.isoformat(timespec="milliseconds"), **getattr(record, "usage", {})}
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_usage_log(target: str | Path | None = None) -> logging.Handler:
    """Send usage lines to ``target`` (appended) or, without one, to standard error.

    Replaces a handler set by an earlier call, so calling it twice does not double the lines.
    """
    handler: logging.Handler
    if target is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(Path(target), encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def log_interaction(
    action: str, *, user: str | None, selection: Mapping[str, object], ms: float, **extra: object
) -> None:
    """Log one interaction: ``action`` (e.g. ``auswahl``, ``download``), the user and the selection."""
    usage = {
        "user": user,
        "action": action,
        "selection": dict(selection),
        "ms": round(ms, 1),
        **extra,
    }
    logger.info(action, extra={"usage": usage})
