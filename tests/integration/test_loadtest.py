"""The load tester as a user runs it: a subprocess against the live site (nginx + 4 gunicorn workers + PostgreSQL).

Accounts get a per-run prefix, so the shared site keeps its data apart from them.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from app.loadtest.accounts import TEAM_NAME, ensure_accounts
from app.ops.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "integration-" + secrets.token_hex(6)


def loadtest(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.loadtest", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def prefix(site) -> str:
    """Three load-test accounts on the live site: <prefix>-001..003."""
    name = f"lt{secrets.token_hex(3)}"
    assert ensure_accounts(site.env["DATABASE_URL"], 3, prefix=name, password=PASSWORD) == \
        [f"{name}-001", f"{name}-002", f"{name}-003"]
    return name


def registered_workers(site) -> set[str]:
    return {f"w{wid}" for wid, _, _ in site.registered_workers()}


def test_twelve_sessions_chart_on_several_workers_and_are_reported(site, prefix, tmp_path):
    out_json, out_html = tmp_path / "run.json", tmp_path / "run.html"
    result = loadtest("--url", site.url, "--users", "3", "--prefix", prefix, "--password", PASSWORD,
                      "--sessions", "12", "--ramp", "1", "--seconds", "1", "--json", str(out_json),
                      "--html", str(out_html))
    assert result.returncode == 0, result.stderr
    summary = json.loads(out_json.read_text())
    assert summary["counts"] == {"sessions": 12, "ok": 12, "errors": 0}, summary["errors"]
    assert summary["errors"] == {}
    # A 1 s query cannot chart sooner than 1 s after the page request.
    assert summary["time_to_chart"]["p50"] >= 1.0
    assert summary["time_to_chart"]["max"] < 60
    workers = summary["workers"]
    assert sum(workers.values()) == 12 and len(workers) > 1, workers
    assert set(workers) <= registered_workers(site)
    sessions = summary["sessions"]
    assert {s["user"] for s in sessions} == {f"{prefix}-00{i}" for i in (1, 2, 3)}
    for s in sessions:
        assert s["state"] == "done" and s["page_worker"] == s["worker"]  # sticky: page, autoload, websocket
        assert s["elapsed_s"] >= 1.0
        assert abs(s["elapsed_s"] - (s["page_s"] + s["autoload_s"] + s["connect_s"] + s["chart_s"])) < 0.05
    starts = sorted(s["start_s"] for s in sessions)
    assert starts[0] < 0.1 and 0.8 < starts[-1] < 1.5  # spread over the 1 s ramp
    page = out_html.read_text()
    for title in ("Time to chart (histogram)", "Time to chart by start time", "Sessions per worker"):
        assert title in page
    assert 'type="application/json"' in page and "Bokeh.embed" in page
    assert "12 sessions, 12 charts, 0 errors" in result.stdout
    assert "12/12 started" in result.stderr  # the plain progress line (stderr is not a terminal)


def test_unreachable_url_is_one_clear_line():
    line = one_error_line(loadtest("--url", f"http://127.0.0.1:{free_port()}", "--sessions", "1"))
    assert "cannot reach" in line and "Connection refused" in line


def test_wrong_password_is_one_clear_line(site, prefix):
    line = one_error_line(loadtest("--url", site.url, "--prefix", prefix, "--password", "not-the-password",
                                   "--users", "3", "--sessions", "3"))
    assert f"login as {prefix}-001 failed: wrong username or password" in line
    assert "python -m app.loadtest accounts --count 3" in line


def test_unknown_dashboard_is_one_clear_line(site, prefix):
    line = one_error_line(loadtest("--url", site.url, "--prefix", prefix, "--password", PASSWORD,
                                   "--users", "1", "--sessions", "1", "--dashboard", "nope"))
    assert "no dashboard 'nope'" in line


def test_refused_parameters_and_forbidden_dashboards_are_one_clear_line(site, prefix):
    line = one_error_line(loadtest("--url", site.url, "--prefix", prefix, "--password", PASSWORD, "--users", "1",
                                   "--sessions", "1", "--param", "bogus=1"))
    assert "refused the parameters for 'slow-query'" in line and "bogus" in line
    line = one_error_line(loadtest("--url", site.url, "--prefix", prefix, "--password", PASSWORD, "--users", "1",
                                   "--sessions", "1", "--dashboard", "team", "--param", "team=999999"))
    assert f"{prefix}-001 may not open 'team'" in line


# -- the accounts subcommand ----------------------------------------------------------------

def accounts_env(site, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": site.env["DATABASE_URL"], "APP_ENV": "test", "LOADTEST_PASSWORD": PASSWORD, **extra}


def users_named(site, pattern: str) -> list[tuple]:
    with psycopg2.connect(site.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT u.username, u.role, u.is_loadtest, u.query_limit, t.name FROM users u "
                    "JOIN teams t ON t.id = u.team_id WHERE u.username LIKE %s ORDER BY u.username", (pattern,))
        return cur.fetchall()


def test_accounts_are_created_then_reused(site):
    name = f"lt{secrets.token_hex(3)}"
    first = loadtest("accounts", "--count", "2", "--prefix", name, env=accounts_env(site))
    assert first.returncode == 0, first.stderr
    assert "created 2, updated 0" in first.stdout and name in first.stdout
    assert users_named(site, f"{name}-%") == [(f"{name}-001", "lead", True, 100, TEAM_NAME),
                                              (f"{name}-002", "lead", True, 100, TEAM_NAME)]
    second = loadtest("accounts", "--count", "3", "--prefix", name, "--role", "member", "--query-limit", "7",
                      env=accounts_env(site))
    assert second.returncode == 0, second.stderr
    assert "created 1, updated 2" in second.stdout
    assert [row[1:4] for row in users_named(site, f"{name}-%")] == [("member", True, 7)] * 3
    # The reused accounts log in with the password they were (re)created with.
    run = loadtest("--url", site.url, "--prefix", name, "--password", PASSWORD, "--users", "3", "--sessions", "3",
                   "--seconds", "0", "--quiet")
    assert run.returncode == 0 and "3 sessions, 3 charts, 0 errors" in run.stdout, run.stderr


def test_accounts_refuse_to_take_over_a_regular_user(site):
    name = f"lt{secrets.token_hex(3)}"
    with psycopg2.connect(site.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO teams (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (TEAM_NAME,))
        cur.execute("INSERT INTO users (username, password_hash, role, team_id) "
                    "SELECT %s, '!', 'member', id FROM teams WHERE name = %s", (f"{name}-001", TEAM_NAME))
    line = one_error_line(loadtest("accounts", "--count", "2", "--prefix", name, env=accounts_env(site)))
    assert f"{name}-001" in line and "not a load-test account" in line
    # One transaction: nothing was created or changed.
    assert users_named(site, f"{name}-%") == [(f"{name}-001", "member", False, None, TEAM_NAME)]


def test_accounts_outside_dev_need_a_real_password(site):
    env = accounts_env(site, APP_ENV="production", SECRET_KEY=secrets.token_urlsafe(32),
                       BOKEH_SECRET_KEY=secrets.token_urlsafe(48), LOADTEST_PASSWORD="")
    line = one_error_line(loadtest("accounts", "--count", "1", "--prefix", f"lt{secrets.token_hex(3)}", env=env))
    assert "LOADTEST_PASSWORD" in line and "12 characters" in line


# -- the live subcommand ------------------------------------------------------------------------

def test_accounts_over_teams_then_a_short_live_run_delivers_every_write_once(site, tmp_path):
    """accounts --teams, then `live`: 12 sessions of the three live dashboards, 2 writes/s for 3 s,
    every write reaches every session allowed to see it, once, and nobody else."""
    name = f"lv{secrets.token_hex(3)}"
    made = loadtest("accounts", "--count", "6", "--teams", "3", "--history-days", "20", "--prefix", name,
                    env=accounts_env(site))
    assert made.returncode == 0, made.stderr
    assert "3 teams Load test 01 .. Load test 03" in made.stdout
    assert [row[:2] + (row[4],) for row in users_named(site, f"{name}-%")] == [
        (f"{name}-001", "lead", "Load test 01"), (f"{name}-002", "lead", "Load test 02"),
        (f"{name}-003", "lead", "Load test 03"), (f"{name}-004", "member", "Load test 01"),
        (f"{name}-005", "member", "Load test 02"), (f"{name}-006", "member", "Load test 03")]
    out = tmp_path / "live.json"
    run = loadtest("live", "--url", site.url, "--database-url", site.env["DATABASE_URL"], "--prefix", name,
                   "--password", PASSWORD, "--users", "6", "--sessions", "12", "--rate", "2", "--seconds", "3",
                   "--seed", "3", "--json", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())
    sessions, writes, d = summary["sessions"], summary["writes"], summary["deliveries"]
    assert sessions["open"] == 12 and sessions["failed"] == 0 and sessions["lost"] == 0, summary["errors"]
    assert sessions["by_dashboard"] == {"team": 9, "my-happiness": 2, "teams": 1}
    assert len(sessions["by_worker"]) > 1 and set(sessions["by_worker"]) <= registered_workers(site)
    assert writes["count"] == 6
    # The one teams session sees all 6 writes; each team session its team's; my-happiness its user's.
    assert d["expected"] >= 6 and d["delivered"] == d["expected"]
    assert (d["missed"], d["duplicated"], d["misdelivered"]) == (0, 0, 0)
    assert summary["by_dashboard"]["teams"]["expected"] == 6
    assert 0 < d["latency_s"]["p50"] <= d["latency_s"]["p99"] <= d["latency_s"]["max"] < 2.0
    assert d["bytes_per_update"] > 0 and summary["clean"] is True
    assert "missed 0, duplicated 0, misdelivered 0" in run.stdout
