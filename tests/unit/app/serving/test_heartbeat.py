"""The figures a heartbeat stores for the admin console."""
from __future__ import annotations

import json

from app.serving.heartbeat import WorkerFigures, rss_bytes


def test_live_updates_per_second_come_from_two_beats():
    clock = iter([100.0, 102.0, 103.0])
    updates = iter([10, 30, 30])
    figures = WorkerFigures(lambda: {"live_updates": next(updates), "queries_running": 1},
                            clock=lambda: next(clock), memory=lambda: 1234)
    first = json.loads(figures.json())
    assert first["live_updates_per_s"] is None and first["rss_bytes"] == 1234 and first["queries_running"] == 1
    assert json.loads(figures.json())["live_updates_per_s"] == 10.0
    assert json.loads(figures.json())["live_updates_per_s"] == 0.0


def test_figures_that_cannot_be_read_skip_one_beat():
    def broken():
        raise RuntimeError("dictionary changed size during iteration")
    assert WorkerFigures(broken).json() is None


def test_this_process_has_a_resident_size():
    assert rss_bytes() > 10 * 2**20
