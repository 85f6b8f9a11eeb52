"""A tiny fault drill on the real site: one worker SIGKILLed, or a whole namespace host killed,
under open charts, page loads and writes; the report's counts agree with what happened
(benchmarks/drill.py)."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, ensure_accounts
from app.ops import netns
from benchmarks.drill import (
    HISTORY_DAYS,
    PREFIX,
    TEAMS_N,
    USERS,
    Config,
    Drill,
    HostKill,
    WorkerKill,
    run_drill,
    start_site,
    stop_site,
)
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


def test_a_killed_host_s_charts_all_come_back_on_the_other_hosts_and_the_drill_leaves_nothing(output_dir):
    base = Path(tempfile.mkdtemp(prefix="happiness-test-drill-"))
    os.chmod(base, 0o755)  # the cluster runs as the postgres user when we are root
    try:
        cluster, site, url, hosts, missing = start_site(base, output_dir / "drill-host-logs", lambda _: None)
        names = [h.netns.name for h in hosts.values()]
        try:
            assert missing is None and sorted(hosts) == ["b", "c"], missing
            config = Config(charts=12, page_rate=1.0, write_rate=2.0, steady_s=2.0, quiet_s=2.0, faults=("host-kill",))
            drill = Drill(config, site, url, cluster, hosts=hosts, say=lambda _: None)
            asyncio.run(drill.run())
            summary = drill.summary()
        finally:
            stop_site(site, hosts, cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fault = drill.windows[1].fault
    assert isinstance(fault, HostKill) and len(fault.workers) == 2 and fault.charts_on_host >= 1, fault.notes()
    assert fault.routes_gone_s is not None and fault.back_s is not None, fault.notes()
    steady, kill = summary["rows"]
    # Every chart on host c lost its websocket, and only those; each came back on a worker of another host.
    assert steady["charts"]["lost_websocket"] == 0, steady
    assert kill["charts"]["lost_websocket"] == kill["charts"]["recovered"] == fault.charts_on_host, kill
    assert kill["charts"]["lost"] == 0, kill
    assert not set(fault.workers) & set(kill["charts"]["workers_after"]), kill
    for row in (steady, kill):
        assert row["updates"] == {"lost": 0, "duplicated": 0}, row
        assert row["page_loads"]["failed"] == 0, row
    # The namespaces and everything in them are gone.
    assert not set(names) & set(netns.namespaces())
