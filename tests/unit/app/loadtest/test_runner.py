"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import asyncio

import pytest
from tornado.httpclient import HTTPClientError
from tornado.simple_httpclient import HTTPTimeoutError

from app.loadtest.runner import (
    LoadConfig,
    arrival_offsets,
    classify,
    error_reason,
    session_params,
)
from app.loadtest.site_client import ClientError, ConnectionClosed

URL = "http://127.0.0.1:8080"


# -- arguments ----------------------------------------------------------------------------

def _caused(exc: ClientError, cause: BaseException) -> ClientError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("changes, message", [
    ({"url": "ws://x"}, "url"), ({"users": 0}, "users"), ({"sessions": 0}, "sessions"),
    ({"ramp": -1}, "ramp"), ({"seconds": -1}, "seconds"), ({"timeout": 0}, "timeout"),
    ({"duration": 0}, "duration"), ({"dashboard": "../admin"}, "dashboard"),
])
def test_config_validation_for_programmatic_use(changes, message):
    with pytest.raises(ValueError, match=message):
        LoadConfig(**{"url": URL, **changes}).validate()
    LoadConfig(url=URL).validate()


# -- schedule and parameters --------------------------------------------------------------

def test_arrival_schedule_spreads_starts_uniformly_over_the_ramp():
    assert arrival_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
    assert arrival_offsets(3, 0.0) == [0.0, 0.0, 0.0]
    assert arrival_offsets(1, 10.0) == [0.0]
    offsets = arrival_offsets(200, 10.0)
    gaps = {round(b - a, 9) for a, b in zip(offsets, offsets[1:])}
    assert len(offsets) == 200 and gaps == {0.05} and offsets[-1] < 10.0


def test_session_params_make_slow_queries_distinct_unless_identical():
    config = LoadConfig(url=URL, seconds=2.5)
    assert session_params(config, 7) == {"seconds": "2.5", "variant": "7"}
    assert session_params(config, None) == {"seconds": "2.5"}
    blocking = LoadConfig(url=URL, dashboard="slow-query-blocking", seconds=1, params=(("variant", "3"),))
    assert session_params(blocking, 9) == {"seconds": "1", "variant": "3"}  # an explicit --param wins
    # Other dashboards have neither seconds nor a variant: they get exactly the --param values.
    assert session_params(LoadConfig(url=URL, dashboard="my-happiness", params=(("days", "30"),)), 5) == {"days": "30"}


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("exc, kind", [
    (ClientError("page answered HTTP 503", status=503), "http-503"),
    (ClientError("expected ACK, got ERROR"), "protocol-error"),
    (ConnectionClosed("the server closed the websocket"), "websocket-closed"),
    (asyncio.TimeoutError(), "timeout"),
    (_caused(ClientError("cannot reach", status=599), ConnectionRefusedError(111, "refused")), "connect-error"),
    (_caused(ClientError("cannot reach", status=599), HTTPTimeoutError("Timeout")), "timeout"),
    (HTTPClientError(403), "http-403"),
    (HTTPTimeoutError("Timeout while connecting"), "timeout"),
    (ConnectionResetError(104, "Connection reset by peer"), "connect-error"),
    (KeyError("x"), "client-error"),
])
def test_classify_names_the_error_kind(exc, kind):
    assert classify(exc)[0] == kind


def test_error_reason_reads_the_sites_error_page():
    body = b'<h1>400 Bad request</h1>\n<p class="error" role="alert">&#39;days&#39; must be a whole number</p>'
    assert error_reason(body) == "'days' must be a whole number"
    assert error_reason(b"<html>nothing</html>") == ""


# -- statistics and summaries -------------------------------------------------------------

