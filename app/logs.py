"""Logging for every process of the site, configured in one place: gunicorn (logconfig_dict),
the edge and the launcher use `config()`.

One line per event with time, level, process and logger; `LOG_FORMAT=json` makes each line a
JSON object for log shippers. Without this, the app's and Bokeh's INFO lines were dropped in
the gunicorn workers (only gunicorn's own loggers were configured).
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
import socket
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(host)s[%(process)d] %(worker)s %(name)s: %(message)s"
# Loggers that say too much below WARNING for a site under load.
QUIET = ("asyncio", "bokeh.server.tornado", "bokeh.server.views.ws", "bokeh.server.protocol_handler",
         "bokeh.server.session", "bokeh.document", "tornado.general", "urllib3", "alembic.runtime.plugins")


# This process's Bokeh server (w7), once it has one; "-" for the master, the edge, the launcher.
_worker = "-"


def set_worker(name: str) -> None:
    """Name this process's worker in every log line from now on (app.serving.hooks calls it)."""
    global _worker
    _worker = name


class HostFilter(logging.Filter):
    """Adds the host name and the worker to every record (several hosts log into one place)."""

    host = socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        record.host = self.host
        record.worker = _worker
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "host": getattr(record, "host", ""), "pid": record.process,
            "worker": getattr(record, "worker", "-"),
            "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def config(level: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A logging.config.dictConfig for LOG_LEVEL and LOG_FORMAT (text or json)."""
    level = (level or os.environ.get("LOG_LEVEL", "info")).upper()
    fmt = (fmt or os.environ.get("LOG_FORMAT", "text")).lower()
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT, "datefmt": "%Y-%m-%d %H:%M:%S"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"host": {"()": HostFilter}},
        "formatters": {"site": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "site", "filters": ["host"]}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # gunicorn's own loggers go through the same handler, and only there.
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": level, "handlers": ["stderr"], "propagate": False},
            **{name: {"level": max(logging.WARNING, logging.getLevelName(level))} for name in QUIET},
        },
    }


def configure(level: str | None = None, fmt: str | None = None) -> None:
    logging.config.dictConfig(config(level, fmt))

