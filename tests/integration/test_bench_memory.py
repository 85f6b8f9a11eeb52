"""The memory benchmark against the real site, small: 20 idle sessions held open, every worker's
memory read from /proc before and after, the sessions counted per worker and closed again."""
from __future__ import annotations

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD
from benchmarks.memory import run_memory, worker_pids

SESSIONS = 20


def test_memory_scenario_holds_idle_sessions_and_reads_every_worker(site):
    database_url = site.settings.database_url
    pids = worker_pids(database_url)
    assert len(pids) == 4
    result = run_memory(site.url, database_url, DEV_LOADTEST_PASSWORD, sessions=SESSIONS, say=lambda _: None,
                        warmup_per_worker=1, destroyed_s=1.0)
    assert result["errors"] == {}
    assert result["open"] == SESSIONS and result["alive_at_reading"] == SESSIONS
    assert set(result["workers"]) == set(pids) and result["unplaced"] == 0
    assert sum(w["sessions"] for w in result["workers"].values()) == SESSIONS
    for name, w in result["workers"].items():
        assert w["pid"] == pids[name]
        assert w["rss_before_mb"] > 20 and w["rss_after_mb"] > 20, w  # a worker with Bokeh and Flask loaded
    # Generous: a correctness bound (a per-session figure from the readings), not the target.
    assert result["mb_per_session_rss"] is not None and -5 < result["mb_per_session_rss"] < 20
    assert result["verdict"] in ("met", "missed")
