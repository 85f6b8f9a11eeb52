"""One logging configuration for every process: text or JSON lines naming host, pid and worker."""
from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

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


def emit_in(fmt: str, message: str, logger: str = "app.test", args: object = None) -> str:
    config = logs.config("info", fmt)
    stream = io.StringIO()
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        if args is None:
            logging.getLogger(logger).info(message)
        else:
            logging.getLogger(logger).info(message, args)
    finally:
        logging.config.dictConfig(logs.config("warning", "text"))
    return stream.getvalue()


def test_a_line_names_its_request_in_text_and_json():
    token = logs.request_id.set("0123456789abcdef0123456789abcdef")
    try:
        text = emit_in("text", "page")
        entry = json.loads(emit_in("json", "page"))
    finally:
        logs.request_id.reset(token)
    assert " - request=0123456789abcdef0123456789abcdef app.test: page" in text
    assert entry["request_id"] == "0123456789abcdef0123456789abcdef" and "session_id" not in entry
    # Outside the request: no field at all, not an empty one.
    assert "request=" not in emit_in("text", "later")
    assert "request_id" not in json.loads(emit_in("json", "later"))


def test_a_session_is_named_without_its_signature_and_only_inside():
    signed = "n93JLgDgvz7wvEeGAb0RkLepXZTZ1xf7TOpbrWJJ8M9c.L_nymiojFjOIl1m3oyBnyHb-gXOas-F0-egbof2yFpA"
    with logs.session(signed):
        text = emit_in("text", "query done")
        entry = json.loads(emit_in("json", "query done"))
    assert "session=n93JLgDgvz7wvEeGAb0RkLepXZTZ1xf7TOpbrWJJ8M9c app.test: query done" in text
    assert entry["session_id"] == "n93JLgDgvz7wvEeGAb0RkLepXZTZ1xf7TOpbrWJJ8M9c"
    assert "L_nymiojFjOIl1m3oyBnyHb" not in text + json.dumps(entry)
    assert logs.session_id.get() is None
    with logs.session(None):  # a document without a session (tests building one) logs none
        assert "session=" not in emit_in("text", "x")


def test_both_ids_when_a_request_works_for_a_session():
    token = logs.request_id.set("abcdef0123456789")
    try:
        with logs.session("sid.sig"):
            assert "request=abcdef0123456789 session=sid app.test:" in emit_in("text", "x")
    finally:
        logs.request_id.reset(token)


def test_gunicorn_access_lines_take_the_id_flask_echoed():
    # gunicorn logs the access line after Flask's request ended, with its atoms as the args.
    from gunicorn.glogging import SafeAtoms

    atoms = SafeAtoms({"h": "127.0.0.1", "{x-request-id}o": "feedfacefeedface"})
    entry = json.loads(emit_in("json", "%(h)s", logger="gunicorn.access", args=atoms))
    assert entry["request_id"] == "feedfacefeedface" and entry["message"] == "127.0.0.1"
    forged = SafeAtoms({"h": "x", "{x-request-id}o": "not an id\nINFO fake line"})
    assert "request_id" not in json.loads(emit_in("json", "%(h)s", logger="gunicorn.access", args=forged))
    # Another logger's mapping args are not mistaken for atoms.
    other = json.loads(emit_in("json", "%(h)s", args={"h": "y", "{x-request-id}o": "feedfacefeedface"}))
    assert "request_id" not in other


def test_request_ids_are_hex_of_bounded_length():
    assert logs.valid_request_id("0123456789abcdefABCDEF0123456789") == "0123456789abcdefABCDEF0123456789"
    for bad in (None, "", "abc", "g" * 32, "a" * 65, "abcdef01 abcdef01", "abcdef01\n", "ａｂｃｄｅｆ０１"):
        assert logs.valid_request_id(bad) is None, bad
    fresh = logs.new_request_id()
    assert logs.valid_request_id(fresh) == fresh and fresh != logs.new_request_id()


@pytest.mark.parametrize("level, fmt, message", [
    ("verbose", "text", "LOG_LEVEL must be one of debug, info"),
    ("info", "jsn", "LOG_FORMAT must be text or json, got 'jsn'"),
])
def test_bad_settings_are_named(level, fmt, message):
    with pytest.raises(ValueError, match=message):
        logs.config(level, fmt)
    assert logs.config(" Warning ", "JSON ")["root"]["level"] == "WARNING"


def test_json_format_follows_log_format(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert logs.json_format() is True
    monkeypatch.setenv("LOG_FORMAT", "text")
    assert logs.json_format() is False
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logs.json_format()
