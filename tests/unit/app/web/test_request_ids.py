"""Every Flask response carries its request id: the edge's, or a fresh one; each line the
request logs names it, and the next request does not inherit it."""
from __future__ import annotations

import io
import logging
import logging.config

import pytest
from flask import Flask

from app import logs
from app.web import request_ids


@pytest.fixture
def client():
    app = Flask(__name__)
    request_ids.init_app(app)
    seen: list = []

    @app.get("/")
    def index():
        logging.getLogger("app.test").info("serving")
        seen.append(logs.request_id.get())
        return "ok"

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    client.seen = seen
    return client


@pytest.fixture
def log_stream():
    config = logs.config("info", "text")
    stream = io.StringIO()
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    yield stream
    logging.config.dictConfig(logs.config("warning", "text"))


def test_the_edges_id_is_used_echoed_and_logged(client, log_stream):
    rid = "0123456789abcdef0123456789abcdef"
    response = client.get("/", headers={"X-Request-Id": rid})
    assert response.headers["X-Request-Id"] == rid and client.seen == [rid]
    assert f"request={rid} app.test: serving" in log_stream.getvalue()
    assert logs.request_id.get() is None  # torn down with the request


@pytest.mark.parametrize("header", ["", "x" * 32, "a" * 65, "abc", "deadbeef; rm -rf"])
def test_a_missing_or_bad_id_is_replaced(client, header):
    response = client.get("/", headers={"X-Request-Id": header})
    rid = response.headers["X-Request-Id"]
    assert logs.valid_request_id(rid) == rid and rid != header and client.seen == [rid]


def test_each_request_gets_its_own(client):
    first = client.get("/").headers["X-Request-Id"]
    second = client.get("/").headers["X-Request-Id"]
    assert first != second and client.seen == [first, second]


def test_errors_and_404s_carry_it_too(client):
    assert client.get("/boom", headers={"X-Request-Id": "cafebabecafebabe"}).headers["X-Request-Id"] == "cafebabecafebabe"
    assert client.get("/nope", headers={"X-Request-Id": "cafebabecafebabf"}).headers["X-Request-Id"] == "cafebabecafebabf"
