"""The console's pure parts: queries in flight from runs and tickets, merged figures."""
from __future__ import annotations

from app.web.admin.console import queries_in_flight, recent_errors, sessions_by_dashboard, worker_row


def ticket(id, user, key, ahead, limit=2, worker=1, ttl=0.0, dashboard="slow-query", label="slow"):
    return {"id": id, "user_id": user, "username": f"u{user}", "worker_id": worker, "dashboard": dashboard,
            "label": label, "query_key": key, "query_limit": limit, "cache_ttl": ttl, "elapsed_s": 1.25,
            "ahead": ahead}


def run(run_id, key, worker=1, waiters=1):
    return {"run_id": run_id, "key": key, "worker_id": worker, "waiters": waiters, "elapsed_s": 3.04}


def test_sessions_sharing_a_run_are_counted_with_their_users():
    runs = [run(5, "k1", worker=2, waiters=2)]
    tickets = [ticket(1, 10, "k1", 0, worker=2), ticket(2, 11, "k1", 0, worker=3, ttl=30.0),
               ticket(3, 10, "k1", 1)]
    (q,) = queries_in_flight(runs, tickets)
    assert q == {"id": "run-5", "state": "running", "users": ["u10", "u11"], "dashboard": "slow-query",
                 "label": "slow", "worker": "w2", "elapsed_s": 3.0, "sessions": 3, "workers_waiting": 2,
                 "cache_ttl": 30.0}


def test_tickets_beyond_the_users_limit_are_queued_with_their_place():
    runs = [run(5, "k1")]
    tickets = [ticket(1, 10, "k1", 0, limit=1), ticket(2, 10, "k2", 1, limit=1), ticket(3, 10, "k1", 2, limit=1)]
    out = queries_in_flight(runs, tickets)
    assert [(q["id"], q["state"], q["sessions"]) for q in out] == [
        ("run-5", "running", 1), ("ticket-2", "queued", 1), ("ticket-3", "queued", 1)]
    assert [q.get("position") for q in out] == [None, 1, 2]


def test_a_ticket_between_steps_is_not_listed_and_a_run_without_tickets_is():
    out = queries_in_flight([run(7, "k9")], [ticket(1, 10, "k-cached", 0)])
    assert [(q["id"], q["sessions"], q["users"], q["dashboard"]) for q in out] == [("run-7", 0, [], None)]


def test_sessions_by_dashboard_adds_workers_up_and_ignores_missing_figures():
    assert sessions_by_dashboard([{"dashboards": {"team": 2, "slow-query": 1}}, None, {},
                                  {"dashboards": {"team": 3}}]) == {"slow-query": 1, "team": 5}


def test_recent_errors_are_merged_newest_first_and_name_their_worker():
    workers = [{"id": 1, "stats": {"errors": [{"at": 10.0, "dashboard": "a", "message": "m1"}]}},
               {"id": 2, "stats": {"errors": [{"at": 30.0, "dashboard": "b", "message": "m2"},
                                              {"at": 5.0, "dashboard": "b", "message": "m3"}]}},
               {"id": 3, "stats": {}}]
    assert [(e["worker"], e["message"]) for e in recent_errors(workers, limit=2)] == [("w2", "m2"), ("w1", "m1")]


def test_a_worker_row_is_stale_past_the_ttl_and_shows_its_last_report():
    row = {"id": 4, "host": "10.0.0.2", "port": 5006, "pid": 99, "sessions": 3, "pending": 1, "ready": True,
           "uptime_s": 100.04, "heartbeat_age_s": 7.0,
           "stats": {"queries_running": 2, "queries_queued": 1, "rss_bytes": 1 << 20, "live_updates_per_s": 4.5}}
    out = worker_row(row, ttl_seconds=5.0)
    assert out["worker"] == "w4" and out["alive"] is False and out["uptime_s"] == 100.0
    assert (out["queries_running"], out["queries_queued"], out["rss_bytes"]) == (2, 1, 1 << 20)
    assert worker_row({**row, "heartbeat_age_s": 1.0, "stats": {}}, 5.0)["queries_running"] is None
