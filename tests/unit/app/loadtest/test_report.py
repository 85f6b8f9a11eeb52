"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from app.loadtest.report import format_text, percentile, summarize, write_html, write_json
from app.loadtest.runner import (
    LoadConfig,
    LoadRun,
    SessionRecord,
)

URL = "http://127.0.0.1:8080"


# -- arguments ----------------------------------------------------------------------------

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


def test_percentile_is_nearest_rank():
    assert percentile([1, 2, 3, 4], 50) == 2  # not 2.5: always one of the measured values
    values = [4.0, 1.0, 3.0, 2.0]
    assert [percentile(values, p) for p in (25, 50, 75, 90, 100)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert percentile([5.0], 1) == 5.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 1001)), 99.9) == 999
    assert percentile([], 50) is None
    # The rank is ceil(p n / 100) for every size and the percentiles the reports use.
    for n in range(1, 1001):
        for p in (1, 25, 50, 90, 99, 99.9):
            assert percentile(range(1, n + 1), p) == max(1, math.ceil(round(p * n / 100, 9))), (n, p)
    for bad in (0, 101, -5):
        with pytest.raises(ValueError):
            percentile(values, bad)


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

