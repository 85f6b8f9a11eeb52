"""Logging for every process of the site, configured in one place: gunicorn (logconfig_dict),
the edge and the launcher use `config()`.

One line per event with time, level, host, process, worker and logger, plus the request id
(`request=`) or Bokeh session id (`session=`) of the work it was done for; `LOG_FORMAT=json`
makes each line a JSON object for log shippers. Without this, the app's and Bokeh's INFO
lines were dropped in the gunicorn workers (only gunicorn's own loggers were configured).

The ids travel in context variables: Flask sets the request id per request
(app.web.request_ids), the Bokeh server and the dashboards' kit the session id for the work
of a session (asyncio copies them into the tasks and callbacks started on its behalf).
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Mapping

TEXT_FORMAT = "%(asctime)s %(levelname)s %(host)s[%(process)d] %(worker)s%(ids)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Loggers that say too much below WARNING for a site under load.
QUIET = ("asyncio", "bokeh.server.tornado", "bokeh.server.views.ws", "bokeh.server.protocol_handler",
         "bokeh.server.session", "bokeh.document", "tornado.general", "urllib3", "alembic.runtime.plugins")


# This process's Bokeh server (w7), once it has one; "-" for the master, the edge, the launcher.
_worker = "-"


def set_worker(name: str) -> None:
    """Name this process's worker in every log line from now on (app.serving.hooks calls it)."""
    global _worker
    _worker = name


# The request (Flask: nginx's $request_id, else our own) and the Bokeh session a line is about.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id: ContextVar[str | None] = ContextVar("session_id", default=None)
# nginx's $request_id is 32 hex digits; anything else from outside is replaced, so a client
# cannot write arbitrary text (or megabytes) into every line of its request.
REQUEST_ID = re.compile(r"[0-9a-fA-F]{8,64}")
# gunicorn's access line is written after Flask's request ended; it reads the id Flask
# echoed in the response (gunicorn's atoms name response headers "{name}o").
GUNICORN_RESPONSE_ID = "{x-request-id}o"
# The header the edge passes $request_id in, to Flask and to the Bokeh servers.
REQUEST_HEADER = "X-Request-Id"


def valid_request_id(value: str | None) -> str | None:
    """`value` if it looks like a request id (hex, 8-64 digits), else None."""
    return value if value is not None and REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    """A fresh id shaped like nginx's $request_id (for requests that did not pass the edge)."""
    return secrets.token_hex(16)


def session_name(session: str) -> str:
    """What the logs call a Bokeh session: its id without the signature after the '.'.
    The id names the session uniquely; the HMAC adds nothing to a log but secret-derived bytes."""
    return session.split(".", 1)[0]


@contextmanager
def session(session: str | None) -> Iterator[None]:
    """Lines logged inside, and tasks and callbacks started inside, name this Bokeh session."""
    token = session_id.set(session_name(session) if session else None)
    try:
        yield
    finally:
        session_id.reset(token)


class HostFilter(logging.Filter):
    """Adds the host name, the worker and the request or session id to every record
    (several hosts and workers log into one place)."""

    host = socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        record.host = self.host
        record.worker = _worker
        request, session = request_id.get(), session_id.get()
        if request is None and record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            request = valid_request_id(record.args.get(GUNICORN_RESPONSE_ID))
        record.request_id, record.session_id = request, session
        record.ids = (f" request={request}" if request else "") + (f" session={session}" if session else "")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    converter = time.gmtime  # the "Z" in its time says UTC, whatever the host's zone

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "host": getattr(record, "host", ""), "pid": record.process,
            "worker": getattr(record, "worker", "-"),
            "logger": record.name, "message": record.getMessage(),
        }
        for key in ("request_id", "session_id"):
            if getattr(record, key, None):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _settings(level: str | None, fmt: str | None) -> tuple[str, str]:
    """LOG_LEVEL and LOG_FORMAT, unless given. Read here, not in app.config: every process logs,
    also those without the site's settings (the edge before it has a database URL, the load
    tester). A bad value is a ValueError naming the variable, not a silent fallback
    (LOG_FORMAT=jsn would ship text)."""
    level = (level or os.environ.get("LOG_LEVEL", "info")).strip().upper()
    fmt = (fmt or os.environ.get("LOG_FORMAT", "text")).strip().lower()
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS).lower()}, got {level.lower()!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, got {fmt!r}")
    return level, fmt


def json_format() -> bool:
    """LOG_FORMAT=json: for processes that write lines of their own (the edge's nginx)."""
    return _settings(None, None)[1] == "json"


def config(level: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A logging.config.dictConfig for LOG_LEVEL and LOG_FORMAT (text or json)."""
    level, fmt = _settings(level, fmt)
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

