"""The browser benchmark's pure parts: percentiles, the resource kinds, the breakdown of a run."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.browser import intervals, kind_of, percentile, phases, stats, summarize, verdict


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(11)), 90) == pytest.approx(9.0)
    assert percentile([1.0, 2.0], 100) == 2.0


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_lies_within_the_values(xs, q):
    p = percentile(xs, q)
    assert min(xs) - 1e-9 <= p <= max(xs) + 1e-9


def test_stats_round_to_the_millisecond():
    assert stats([0.1234, 0.5678, 0.9]) == {"n": 3, "p50": 0.568, "p90": 0.834, "min": 0.123, "max": 0.9}
    assert stats([])["p50"] is None


@pytest.mark.parametrize("url, kind", [
    ("http://h/bokeh/w1/static/js/bokeh.min.js?v=abc", "bokeh_js"),
    ("http://h/bokeh/w1/static/js/bokeh-widgets.min.js?v=abc", "bokeh_js"),
    ("http://h/bokeh/w1/static/extensions/panel/panel.min.js?v=1", "panel_js"),
    ("http://h/bokeh/w1/static/extensions/panel/css/loading.css", "static_other"),
    ("blob:http://h/1234", "other"),
    ("http://h/bokeh/w1/slow-query/autoload.js?bokeh-autoload-element=x", "autoload"),
    ("http://h/static/dashboard.js", "static_other"),
])
def test_resources_are_sorted_by_kind(url, kind):
    assert kind_of(url, "script") == kind


def _timing(ready=900.0, redirect_end=200.0):
    res = [{"name": "http://h/bokeh/w1/static/js/bokeh.min.js", "type": "script", "start": 310.0, "end": 500.0,
            "transfer": 1000, "encoded": 1000, "decoded": 1000},
           {"name": "http://h/bokeh/w1/static/extensions/panel/panel.min.js", "type": "script", "start": 320.0,
            "end": 550.0, "transfer": 500, "encoded": 500, "decoded": 500},
           {"name": "http://h/bokeh/w1/slow-query/autoload.js", "type": "fetch", "start": 280.0, "end": 300.0,
            "transfer": 10, "encoded": 10, "decoded": 10}]
    ws = [{"created": 560.0, "open": 600.0, "frames": [610.0, 611.0, 612.0, 650.0, 651.0, 700.0, 880.0]}]
    return {"ready": ready, "ws": ws, "resources": res, "long": [[100.0, 100.0], [551.0, 400.0]],
            "nav": {"redirect_end": redirect_end, "response_start": 240.0, "response_end": 250.0,
                    "dom_content_loaded": 260.0, "load": 270.0, "transfer": 5000}}


def test_phases_read_the_page_clock_in_seconds():
    p = phases(_timing())
    assert p["redirect_end"] == 0.2 and p["html_end"] == 0.25 and p["ready"] == 0.9
    assert p["bokeh_js_end"] == 0.5 and p["panel_js_end"] == 0.55 and p["autoload_end"] == 0.3
    assert p["ws_open"] == 0.6 and p["ws_first_frame"] == 0.61 and p["ws_doc_frame"] == 0.7 and p["ws_frames"] == 7
    assert p["bokeh_js_transfer_bytes"] == 1000 and p["panel_js_count"] == 1
    assert p["long_tasks_s"] == 0.5 and p["long_tasks_before_ws_s"] == 0.4  # the task at 100 ms was before the bundles


def test_intervals_add_up_to_the_total():
    p = phases(_timing())
    iv = intervals(p)
    assert iv == {"login_post": 0.2, "html": 0.05, "autoload": 0.05, "bundles": 0.25, "bundles_run": 0.01,
                  "ws_open": 0.04, "doc_pull": 0.1, "query_and_push": 0.2}
    assert sum(iv.values()) == pytest.approx(p["ready"])


def test_a_page_without_a_login_has_no_login_span():
    iv = intervals(phases(_timing(redirect_end=0.0)))
    assert iv["login_post"] is None and iv["html"] == 0.25


def test_summary_subtracts_the_query_and_the_verdict_reads_the_cold_login():
    runs = [{"total": t, "phases": phases(_timing(ready=t * 1000))} for t in (0.9, 1.0, 1.2)]
    s = summarize(runs, 0.1)
    assert s["total"]["p50"] == 1.0 and s["minus_query"]["p50"] == 0.9
    assert s["transfer_bytes_p50"]["bokeh_js"] == 1000
    assert verdict({"cold": {"login_to_chart": s}}) == "met"
    slow = summarize([{"total": 1.5, "phases": phases(_timing(ready=1500))}], 0.1)
    assert verdict({"cold": {"login_to_chart": slow}}) == "missed"
    assert verdict({}) == "missed"
