"""Unit tests for the drill's accounting: recovery times, lost and duplicated updates across
reconnects (app.loadtest.recovery)."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from app.loadtest.live import ChartTracker, Update, Write, bokeh_ms, day_key
from app.loadtest.recovery import ChartState, Recovery, Segment, embedded, ledger
from app.loadtest.site_client import ClientError

NOON = dt.datetime(2026, 3, 4, 12, 0, 0, tzinfo=dt.timezone.utc)
DAY = day_key(bokeh_ms(NOON))
POINTS, COUNTS = ChartTracker.POINTS, ChartTracker.COUNTS


def write(i: int, sent: float) -> Write:
    return Write(i, 1, 10, "A", sent, sent + 0.01, bokeh_ms(NOON + dt.timedelta(seconds=i)))


def point_update(arrival: float, *ws: Write) -> Update:
    return Update(arrival, 100, ("ColumnsStreamed",), tuple(("point", w.point) for w in ws))


def count_update(arrival: float, n: int) -> Update:
    return Update(arrival, 100, ("ColumnsPatched",), (("count", DAY, n),))


def segment(opened: float, closed: float | None, *, points=(), counts=None, updates=(), final_points=None,
            final_counts=None) -> Segment:
    opening = ChartState(frozenset(points), dict(counts or {}))
    final = ChartState(frozenset(final_points if final_points is not None else points),
                       dict(final_counts if final_counts is not None else counts or {}))
    return Segment("w1", opened, None, opening, closed=closed, final=final, updates=tuple(updates))


# -- points (my-happiness) -------------------------------------------------------------------

def test_a_write_missed_while_down_is_not_lost_when_the_new_sessions_opening_holds_it():
    w1, w2, w3 = write(1, 1.0), write(2, 5.0), write(3, 9.0)
    first = segment(0.0, 4.0, updates=[point_update(1.1, w1)], final_points=[w1.point])
    # w2 was written while the websocket was down; the reopened chart's data already holds it.
    second = segment(6.0, None, points=[w1.point, w2.point], updates=[point_update(9.1, w3)],
                     final_points=[w1.point, w2.point, w3.point])
    out = ledger(POINTS, {}, [first, second], [w1, w2, w3])
    assert (out.expected, out.lost, out.duplicated, out.updates) == (3, [], [], 2)


def test_a_write_the_final_chart_lacks_is_lost_and_a_point_streamed_twice_is_duplicated():
    w1, w2 = write(1, 1.0), write(2, 2.0)
    only = segment(0.0, None, updates=[point_update(1.1, w1), point_update(1.5, w1)], final_points=[w1.point])
    out = ledger(POINTS, {}, [only], [w1, w2])
    assert out.lost == [w2]
    assert out.duplicated == [1.5]


def test_a_point_in_the_old_connection_and_again_in_the_new_ones_opening_is_no_duplicate():
    w1 = write(1, 1.0)
    first = segment(0.0, 2.0, updates=[point_update(1.1, w1)], final_points=[w1.point])
    second = segment(3.0, None, points=[w1.point])
    assert ledger(POINTS, {}, [first, second], [w1]).duplicated == []
    # ... but the new connection streaming it on top of its opening is one.
    again = segment(3.0, None, points=[w1.point], updates=[point_update(3.5, w1)], final_points=[w1.point])
    assert ledger(POINTS, {}, [first, again], [w1]).duplicated == [3.5]


# -- counts (team) -------------------------------------------------------------------------

def test_counts_above_the_base_are_the_writes_held_the_latest_missing_ones_are_lost():
    ws = [write(i, float(i)) for i in range(1, 4)]
    base = {DAY: 5}
    first = segment(0.0, 2.5, counts=base, updates=[count_update(1.1, 6), count_update(2.1, 7)],
                    final_counts={DAY: 7})
    whole = segment(4.0, None, counts={DAY: 8})
    assert ledger(COUNTS, base, [first, whole], ws).lost == []
    short = segment(4.0, None, counts={DAY: 7})
    assert ledger(COUNTS, base, [first, short], ws).lost == [ws[2]]


def test_a_count_above_the_writes_sent_before_it_is_a_duplicate_once():
    ws = [write(1, 1.0), write(2, 2.0)]
    base = {DAY: 5}
    # At 1.5 only one write was sent, yet the chart says two: one repeat; saying so again is not another.
    only = segment(0.0, None, counts=base, updates=[count_update(1.1, 6), count_update(1.5, 7), count_update(1.6, 7)],
                   final_counts={DAY: 7})
    out = ledger(COUNTS, base, [only], ws)
    assert out.duplicated == [1.5]
    assert out.lost == []


def test_a_reopened_chart_counting_more_than_was_written_is_a_duplicate():
    ws = [write(1, 1.0)]
    base = {DAY: 5}
    first = segment(0.0, 2.0, counts=base, updates=[count_update(1.1, 6)], final_counts={DAY: 6})
    second = segment(3.0, None, counts={DAY: 7})
    assert ledger(COUNTS, base, [first, second], ws).duplicated == [3.0]


def test_the_accounting_refuses_charts_it_cannot_read_and_open_connections():
    with pytest.raises(ValueError, match="kind"):
        ledger("series", {}, [segment(0.0, None)], [])
    open_segment = Segment("w1", 0.0, POINTS, ChartState())
    with pytest.raises(ValueError, match="ended"):
        ledger(POINTS, {}, [open_segment], [])


# -- recovery times, the embed answer ----------------------------------------------------------

def test_recovery_is_timed_from_the_close_and_from_the_faults_start():
    r = Recovery(lost_at=10.3, fault="kill", fault_at=10.0, worker_before="w1", reason="closed")
    assert (r.from_close, r.from_fault) == (None, None)
    r.back_at = 11.5
    assert r.from_close == pytest.approx(1.2) and r.from_fault == pytest.approx(1.5)
    spontaneous = Recovery(lost_at=3.0, fault=None, fault_at=None, worker_before="w1", reason="closed", back_at=4.0)
    assert spontaneous.from_fault == pytest.approx(1.0)


def test_the_embed_answer_becomes_a_session_to_load_and_garbage_is_a_client_error():
    src = ("http://127.0.0.1:8080/bokeh/w2/team/autoload.js?bokeh-autoload-element=p1&bokeh-app-path=%2Fbokeh%2Fw2"
           "%2Fteam&bokeh-absolute-url=http%3A%2F%2F127.0.0.1%3A8080%2Fbokeh%2Fw2%2Fteam")
    page = embedded(json.dumps({"worker": "w2", "src": src, "elementid": "p1", "token": "t"}).encode())
    assert (page.worker, page.token) == ("w2", "t")
    assert page.websocket_url == "ws://127.0.0.1:8080/bokeh/w2/team/ws"
    for body in (b"<html>", b"{}", json.dumps({"worker": "w2", "src": "http://x/", "token": "t"}).encode()):
        with pytest.raises(ClientError):
            embedded(body)
