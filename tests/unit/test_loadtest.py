"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from tornado.httpclient import HTTPClientError
from tornado.simple_httpclient import HTTPTimeoutError

from app.loadtest.__main__ import config_from_args, main, render_progress, run_parser
from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, AccountError, check_prefix, resolve_password, username
from app.loadtest.report import format_text, percentile, summarize, write_html, write_json
from app.loadtest.runner import (
    LoadConfig, LoadRun, Progress, SessionRecord, arrival_offsets, classify, error_reason, session_params,
)
from app.site_client import ClientError, ConnectionClosed

URL = "http://127.0.0.1:8080"


# -- arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--url", "ftp://example.org"], "http:// or https://"),
    (["--url", "example.org"], "http:// or https://"),
    (["--url", URL, "--users", "0"], "--users: must be >= 1"),
    (["--url", URL, "--sessions", "0"], "--sessions: must be >= 1"),
    (["--url", URL, "--ramp", "-1"], "--ramp: must be >= 0"),
    (["--url", URL, "--seconds", "-0.5"], "--seconds: must be >= 0"),
    (["--url", URL, "--seconds", "nan"], "--seconds: must be >= 0"),
    (["--url", URL, "--users", "two"], "not a whole number"),
    (["--url", URL, "--timeout", "0"], "--timeout: must be > 0"),
    (["--url", URL, "--duration", "0"], "--duration: must be > 0"),
    (["--url", URL, "--sessions", "5", "--duration", "5"], "not allowed with argument"),
    (["--url", URL, "--param", "days"], "key=value"),
    (["--url", URL, "--json", "/nonexistent-dir/x.json"], "does not exist"),
    (["--users", "3"], "--url"),
])
def test_bad_arguments_exit_2_with_a_reason(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run_parser().parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_main_routes_run_and_accounts_subcommands(capsys):
    for argv in (["--url", "ftp://x"], ["run", "--url", "ftp://x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "http:// or https://" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["accounts", "--count", "0"])
    assert exc.value.code == 2 and "--count: must be >= 1" in capsys.readouterr().err


def test_arguments_make_a_config():
    args = run_parser().parse_args(["--url", URL + "/", "--users", "3", "--sessions", "12", "--ramp", "1.5",
                                    "--param", "days=30", "--param", "x=a=b", "--identical", "--password", "pw"])
    config = config_from_args(args)
    assert config == LoadConfig(url=URL, users=3, password="pw", sessions=12, ramp=1.5, identical=True,
                                params=(("days", "30"), ("x", "a=b")))
    assert config.active_users == 3
    assert LoadConfig(url=URL, users=20, sessions=5).active_users == 5
    assert LoadConfig(url=URL, users=20, duration=10).active_users == 20


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

def _caused(exc: ClientError, cause: BaseException) -> ClientError:
    exc.__cause__ = cause
    return exc


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

def test_percentile_is_nearest_rank():
    values = [4.0, 1.0, 3.0, 2.0]
    assert [percentile(values, p) for p in (25, 50, 75, 90, 100)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert percentile([5.0], 1) == 5.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 1001)), 99.9) == 999
    assert percentile([], 50) is None
    for bad in (0, 101, -5):
        with pytest.raises(ValueError):
            percentile(values, bad)


def _record(i: int, elapsed: float, *, error: str | None = None, message: str = "", worker: str | None = "w1",
            page_worker: str | None = None) -> SessionRecord:
    return SessionRecord(i, f"lt-{i % 2 + 1:03d}", start_s=i * 0.5, ok=error is None, error=error, message=message,
                         page_s=0.1, autoload_s=0.2, connect_s=0.3, chart_s=elapsed - 0.6, elapsed_s=elapsed,
                         page_worker=page_worker or worker, worker=worker, state="done" if error is None else None)


def _run() -> LoadRun:
    records = [_record(0, 2.0), _record(1, 4.0, worker="w2"), _record(2, 3.0), _record(3, 1.0, worker="w2"),
               _record(4, 120.0, error="timeout", message="no chart within 120 s", worker="w3"),
               _record(5, 0.1, error="http-503", message="No dashboard server", worker=None, page_worker=None),
               _record(6, 9.0, error="timeout", message="second sample", worker=None, page_worker="w3"),
               _record(7, 2.5, error="query-error", message="The query took longer than 60 s and was stopped.")]
    config = LoadConfig(url=URL, users=2, sessions=8, password="secret-password")
    return LoadRun(config, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), 12.5, 0.7, records)


def test_summary_counts_errors_by_kind_workers_and_percentiles_of_charted_sessions():
    summary = summarize(_run())
    assert summary["counts"] == {"sessions": 8, "ok": 4, "errors": 4}
    assert summary["errors"] == {
        "http-503": {"count": 1, "sample": "No dashboard server"},
        "query-error": {"count": 1, "sample": "The query took longer than 60 s and was stopped."},
        "timeout": {"count": 2, "sample": "no chart within 120 s"},  # the first one's message
    }
    # Failed sessions count against the worker they reached (the document's, else the page's).
    assert summary["workers"] == {"w1": 3, "w2": 2, "w3": 2}
    ttc = summary["time_to_chart"]
    assert (ttc["p50"], ttc["p90"], ttc["p99"], ttc["max"], ttc["mean"]) == (2.0, 4.0, 4.0, 4.0, 2.5)
    assert summary["phase_medians"] == {"page": 0.1, "autoload": 0.2, "connect": 0.3, "chart": 1.9}
    assert summary["started_at"] == "2026-01-02T03:04:05+00:00" and summary["duration_s"] == 12.5
    assert "password" not in summary["config"] and summary["config"]["sessions"] == 8
    assert [s["index"] for s in summary["sessions"]] == list(range(8))
    assert json.loads(json.dumps(summary)) == summary
    text = format_text(summary)
    assert "8 sessions, 4 charts, 4 errors" in text and "p50 2.00 s" in text and "timeout: 2" in text


def test_summary_of_a_run_without_charts_has_no_times():
    run = _run()
    run.records = [r for r in run.records if not r.ok]
    summary = summarize(run)
    assert summary["time_to_chart"]["p50"] is None and summary["time_to_chart"]["mean"] is None
    assert summary["phase_medians"]["chart"] is None
    assert "p50 -" in format_text(summary)


def test_reports_are_written(tmp_path):
    import panel  # noqa: F401  (loaded for Panel dashboards; its models must not leak external files in)
    summary = summarize(_run())
    write_json(summary, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    write_html(summary, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    for title in ("Time to chart (histogram)", "Time to chart by start time", "Sessions per worker"):
        assert title in page
    assert 'type="application/json"' in page and "Bokeh.embed" in page
    assert "<script src=" not in page and "<link " not in page  # self-contained: BokehJS is inline


# -- progress and accounts ------------------------------------------------------------------

def test_progress_line():
    p = Progress(planned=200, duration=None, elapsed_s=3, started=120, charts=95, errors=2, times=[5.2, 5.0, 6.1])
    assert render_progress(p, width=10) == "[######....] 120/200 started, 95 charts, 2 errors, p50 5.2 s"
    loop = Progress(planned=None, duration=60, elapsed_s=15, started=7)
    assert render_progress(loop, width=4) == "[#...] 15/60 s, 7 started, 0 charts, 0 errors"


def test_password_policy():
    assert resolve_password("dev", {}) == DEV_LOADTEST_PASSWORD
    assert resolve_password("test", {"LOADTEST_PASSWORD": "short"}) == "short"
    assert resolve_password("production", {"LOADTEST_PASSWORD": "long-enough-secret"}) == "long-enough-secret"
    for env in ({}, {"LOADTEST_PASSWORD": "elevenchars"}, {"LOADTEST_PASSWORD": DEV_LOADTEST_PASSWORD}):
        with pytest.raises(AccountError, match="LOADTEST_PASSWORD"):
            resolve_password("production", env)


def test_account_names():
    assert [username("loadtest", i) for i in (1, 42, 1000)] == ["loadtest-001", "loadtest-042", "loadtest-1000"]
    assert check_prefix("lt_a.b-1") == "lt_a.b-1"
    for bad in ("", "-x", "a b", "x" * 51, "ünï"):
        with pytest.raises(AccountError):
            check_prefix(bad)


def test_the_caching_resolver_resolves_each_address_once():
    import socket

    from app.site_client import CachingResolver

    calls = []

    class Counting:
        async def resolve(self, host, port, family=socket.AF_UNSPEC):
            calls.append((host, port))
            return [(socket.AF_INET, (host, port))]

    async def scenario():
        resolver = CachingResolver()
        resolver._fallback = Counting()
        first = [await resolver.resolve("127.0.0.1", 8080) for _ in range(3)]
        other = await resolver.resolve("127.0.0.1", 8081)
        return first, other
    first, other = asyncio.run(scenario())
    assert first == [[(socket.AF_INET, ("127.0.0.1", 8080))]] * 3 and other == [(socket.AF_INET, ("127.0.0.1", 8081))]
    assert calls == [("127.0.0.1", 8080), ("127.0.0.1", 8081)]
