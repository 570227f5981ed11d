"""The usage log: one JSON line per interaction (who, what, which selection, how many milliseconds).

Configured here and only here: :func:`configure_usage_log` sends the ``kpisheet.usage`` logger to
a file (created readable by its owner only: it names users and their addresses) or to standard
error; everything else calls :func:`log_interaction` or, for logins, logouts, failed logins and
locks, :func:`log_event`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: Name of the logger the usage lines go to.
USAGE_LOGGER = "kpisheet.usage"
#: Environment variable naming the usage log file when the app runs under ``panel serve``.
USAGE_LOG_ENV = "KPISHEET_USAGE_LOG"
#: Mode of a usage log file this module creates (or finds): owner only.
USAGE_LOG_MODE = 0o600

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
        path = Path(target)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, USAGE_LOG_MODE))
        os.chmod(path, USAGE_LOG_MODE)
        handler = logging.FileHandler(path, encoding="utf-8")
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


def log_event(action: str, *, user: str | None, **fields: object) -> None:
    """Log an event of the login: ``anmeldung``, ``abmeldung``, ``anmeldung_fehlgeschlagen``,
    ``gesperrt``, with the user name as typed and the client's address."""
    logger.info(action, extra={"usage": {"user": user, "action": action, **fields}})
