"""The memory benchmark's pure parts: reading /proc, MB per session per worker and overall."""
from __future__ import annotations

import os

import pytest

from benchmarks.memory import overall, per_session_mb, per_worker, read_memory


def test_per_session_mb_divides_the_growth():
    assert per_session_mb(100 * 1024, 600 * 1024, 1000) == 0.5
    assert per_session_mb(1024, 512, 1) == -0.5  # memory can fall: reported as measured
    assert per_session_mb(None, 1024, 10) is None
    assert per_session_mb(1024, 2048, 0) is None


def test_per_worker_and_overall():
    pids = {"w2": 20, "w1": 10}
    before = {10: {"rss_kb": 100 * 1024, "pss_kb": 90 * 1024}, 20: {"rss_kb": 200 * 1024, "pss_kb": None}}
    after = {10: {"rss_kb": 150 * 1024, "pss_kb": 130 * 1024}, 20: {"rss_kb": 350 * 1024, "pss_kb": 300 * 1024}}
    rows = per_worker(pids, before, after, {"w1": 100, "w2": 300})
    assert list(rows) == ["w1", "w2"]
    assert rows["w1"] == {"pid": 10, "sessions": 100, "rss_before_mb": 100.0, "rss_after_mb": 150.0,
                          "rss_mb_per_session": 0.5, "pss_before_mb": 90.0, "pss_after_mb": 130.0,
                          "pss_mb_per_session": 0.4}
    assert rows["w2"]["rss_mb_per_session"] == 0.5 and rows["w2"]["pss_mb_per_session"] is None
    assert overall(rows.values(), "rss") == 0.5  # (50 + 150) MB / 400 sessions
    assert overall(rows.values(), "pss") is None


def test_overall_weights_workers_by_their_sessions():
    rows = [{"rss_before_mb": 0.0, "rss_after_mb": 10.0, "sessions": 10},
            {"rss_before_mb": 0.0, "rss_after_mb": 30.0, "sessions": 90}]
    assert overall(rows, "rss") == 0.4
    assert overall([{"rss_before_mb": 1.0, "rss_after_mb": 1.0, "sessions": 0}], "rss") is None


def test_read_memory_from_a_proc_tree(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tpython\nVmPeak:\t  999 kB\nVmRSS:\t  51200 kB\n")
    (tmp_path / "42" / "smaps_rollup").write_text("00400000-7fff [rollup]\nRss:  51200 kB\nPss:   40000 kB\n")
    assert read_memory(42, tmp_path) == {"rss_kb": 51200, "pss_kb": 40000}
    assert read_memory(43, tmp_path) == {"rss_kb": None, "pss_kb": None}


def test_read_memory_of_this_process():
    m = read_memory(os.getpid())
    assert m["rss_kb"] is not None and m["rss_kb"] > 1000
    if m["pss_kb"] is not None:
        assert 0 < m["pss_kb"] <= m["rss_kb"] * 1.01


@pytest.mark.parametrize("sessions", [1, 2000])
def test_a_session_costing_half_a_megabyte_is_within_the_target(sessions):
    from benchmarks.memory import TARGET_MB
    assert per_session_mb(0, int(TARGET_MB * 1024 * sessions), sessions) == TARGET_MB
