"""A tiny fault drill on the real site: one worker SIGKILLed under open charts, page loads and
writes; the report's counts agree with what happened (benchmarks/drill.py)."""
from __future__ import annotations

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, ensure_accounts
from benchmarks.drill import HISTORY_DAYS, PREFIX, TEAMS_N, USERS, Config, WorkerKill, run_drill
from tests.integration.helpers import wait_until, workers


def test_a_tiny_drill_accounts_for_every_chart_on_the_killed_worker_and_loses_no_update(site):
    ensure_accounts(site.settings.database_url, USERS, prefix=PREFIX, password=DEV_LOADTEST_PASSWORD,
                    query_limit=500, teams=TEAMS_N, history_days=HISTORY_DAYS)
    config = Config(charts=8, page_rate=1.0, write_rate=2.0, steady_s=2.0, quiet_s=2.0, faults=("kill",))
    drill, summary = run_drill(config, site=site, database_url=site.settings.database_url, say=lambda _: None)
    assert drill.site is site
    steady, kill = summary["rows"]
    fault = drill.windows[1].fault
    assert isinstance(fault, WorkerKill) and fault.victim and fault.charts_on_victim >= 1, fault.notes()
    # Every chart on the killed worker lost its websocket, and only those; each came back, on another worker.
    assert steady["charts"]["lost_websocket"] == 0, steady
    assert kill["charts"]["lost_websocket"] == fault.charts_on_victim, kill
    assert kill["charts"]["recovered"] == fault.charts_on_victim and kill["charts"]["lost"] == 0, kill
    assert fault.victim not in kill["charts"]["workers_after"], kill
    rec = kill["recovery_from_fault_s"]
    assert rec["count"] == fault.charts_on_victim and 0 < rec["p50"] <= rec["p99"] <= rec["max"], rec
    # The accounting saw real traffic, and no write went missing.
    assert summary["writes"] > 0 and summary["charts"]["expected_deliveries"] > 0, summary["charts"]
    assert summary["charts"]["live_updates_received"] > 0, summary["charts"]
    for row in (steady, kill):
        assert row["updates"] == {"lost": 0, "duplicated": 0}, row
        assert row["sessions_open"] == config.charts, row
    assert sum(r["writes"]["made"] for r in (steady, kill)) == summary["writes"]
    assert sum(r["page_loads"]["attempted"] for r in (steady, kill)) == summary["page_loads"] > 0
    # The drill waited for the site to be whole: four workers, the victim replaced.
    wait_until(lambda: len(workers(site)) == 4, 60, "the killed worker was not replaced")
