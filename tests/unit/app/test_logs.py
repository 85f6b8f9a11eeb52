"""One logging configuration for every process: text or JSON lines naming host, pid and worker."""
from __future__ import annotations

import io
import json
import logging
import logging.config

from app import logs


def emit(fmt: str, message: str) -> str:
    config = logs.config("info", fmt)
    stream = io.StringIO()
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    logging.getLogger("app.test").info(message)
    logging.config.dictConfig(logs.config("warning", "text"))  # leave the root quiet again
    return stream.getvalue()


def test_text_lines_name_the_worker_once_it_has_one():
    assert " - app.test: before" in emit("text", "before")
    logs.set_worker("w7")
    try:
        assert "] w7 app.test: after" in emit("text", "after")
    finally:
        logs.set_worker("-")


def test_json_lines_are_one_object_each():
    logs.set_worker("w3")
    try:
        entry = json.loads(emit("json", "hello"))
    finally:
        logs.set_worker("-")
    assert entry["message"] == "hello" and entry["worker"] == "w3" and entry["level"] == "INFO"
    assert entry["logger"] == "app.test" and entry["pid"] > 0 and entry["host"]
