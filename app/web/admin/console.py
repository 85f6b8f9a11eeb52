"""The console's state, read from PostgreSQL only: every host's workers write their figures
there (bokeh_workers.stats, by their heartbeat) and their queries in flight (query_runs,
query_tickets), so any Flask process of any host answers for the whole site.

`site_state` runs three short statements; the rest are pure functions over their rows.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from sqlalchemy import Connection, text

from app.channels import RUN, TICKET, query_ref
from app.models import worker_name

# At most this many queries are listed (a load test holds hundreds; the counts say the rest).
MAX_LISTED = 200
# Errors listed, newest first, over all workers.
MAX_ERRORS = 20

WORKERS_SQL = """
    SELECT id, host, port, pid, sessions, pending, ready_at IS NOT NULL AS ready, stats,
           extract(epoch FROM now() - started_at)::float AS uptime_s,
           extract(epoch FROM now() - heartbeat_at)::float AS heartbeat_age_s
    FROM bokeh_workers ORDER BY id
"""
RUNS_SQL = """
    SELECT run_id, key, worker_id, waiters, extract(epoch FROM now() - started_at)::float AS elapsed_s
    FROM query_runs ORDER BY started_at
"""
# A ticket's place among its user's tickets: the first `query_limit` run, the rest wait.
TICKETS_SQL = """
    SELECT t.id, t.user_id, u.username, t.worker_id, t.dashboard, t.label, t.query_key, t.query_limit, t.cache_ttl,
           extract(epoch FROM now() - t.created_at)::float AS elapsed_s,
           row_number() OVER (PARTITION BY t.user_id ORDER BY t.id) - 1 AS ahead
    FROM query_tickets t LEFT JOIN users u ON u.id = t.user_id ORDER BY t.id
"""


def site_state(conn: Connection, ttl_seconds: float) -> dict[str, Any]:
    """Everything the console shows, as JSON-ready values."""
    workers = [dict(r._mapping) for r in conn.execute(text(WORKERS_SQL))]
    runs = [dict(r._mapping) for r in conn.execute(text(RUNS_SQL))]
    tickets = [dict(r._mapping) for r in conn.execute(text(TICKETS_SQL))]
    queries = queries_in_flight(runs, tickets)
    listed = [worker_row(w, ttl_seconds) for w in workers]
    return {
        "workers": listed,
        "hosts": sorted({w["host"] for w in listed}),
        "queries": queries[:MAX_LISTED],
        "counts": {"running": sum(q["state"] == "running" for q in queries),
                   "queued": sum(q["state"] == "queued" for q in queries)},
        "dashboards": sessions_by_dashboard(w["stats"] for w in workers if _alive(w, ttl_seconds)),
        "live_updates_per_s": round(sum((w["stats"] or {}).get("live_updates_per_s") or 0.0
                                        for w in workers if _alive(w, ttl_seconds)), 2),
        "errors": recent_errors(workers),
    }


def _alive(worker: Mapping[str, Any], ttl_seconds: float) -> bool:
    return worker["heartbeat_age_s"] < ttl_seconds


def worker_row(w: Mapping[str, Any], ttl_seconds: float) -> dict[str, Any]:
    """One line of the workers table: its registry row and what its last beat reported."""
    stats = w["stats"] or {}
    return {
        "worker": worker_name(w["id"]), "id": w["id"], "host": w["host"], "port": w["port"], "pid": w["pid"],
        "ready": w["ready"], "alive": _alive(w, ttl_seconds),
        "uptime_s": round(w["uptime_s"], 1), "heartbeat_age_s": round(w["heartbeat_age_s"], 1),
        "sessions": w["sessions"], "pending": w["pending"],
        "queries_running": stats.get("queries_running"), "queries_queued": stats.get("queries_queued"),
        "rss_bytes": stats.get("rss_bytes"), "live_updates_per_s": stats.get("live_updates_per_s"),
        "errors_total": stats.get("errors_total"),
    }


def queries_in_flight(runs: Iterable[Mapping[str, Any]], tickets: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Running shared runs (with the users and sessions sharing each) then queued tickets.

    A ticket among its user's first `query_limit` whose key has a run is a session sharing
    that run; a ticket further back waits in its user's line (cancellable on its own). A
    ticket that is neither is between steps (claiming, reading the cache) and not listed.
    """
    runs = list(runs)
    by_key = {r["key"]: r for r in runs}
    sharing: dict[str, list[Mapping[str, Any]]] = {r["key"]: [] for r in runs}
    queued = []
    for t in tickets:
        waiting = t["query_limit"] is not None and t["ahead"] >= t["query_limit"]
        if waiting:
            queued.append(t)
        elif t["query_key"] in by_key:
            sharing[t["query_key"]].append(t)
    out = []
    for r in runs:
        shared = sharing[r["key"]]
        first = shared[0] if shared else {}
        out.append({
            "id": query_ref(RUN, r["run_id"]), "state": "running",
            "users": sorted({t["username"] or f"user {t['user_id']}" for t in shared}),
            "dashboard": first.get("dashboard"), "label": first.get("label"),
            "worker": worker_name(r["worker_id"]), "elapsed_s": round(r["elapsed_s"], 1),
            "sessions": len(shared), "workers_waiting": r["waiters"],
            "cache_ttl": max((t["cache_ttl"] or 0.0 for t in shared), default=0.0),
        })
    for t in queued:
        out.append({
            "id": query_ref(TICKET, t["id"]), "state": "queued",
            "users": [t["username"] or f"user {t['user_id']}"],
            "dashboard": t["dashboard"], "label": t["label"],
            "worker": worker_name(t["worker_id"]), "elapsed_s": round(t["elapsed_s"], 1),
            "sessions": 1, "position": t["ahead"] - t["query_limit"] + 1,
            "cache_ttl": t["cache_ttl"] or 0.0,
        })
    return out


def sessions_by_dashboard(stats: Iterable[Mapping[str, Any] | None]) -> dict[str, int]:
    """Open sessions per dashboard over the given workers' last reports."""
    total: Counter[str] = Counter()
    for s in stats:
        for name, count in ((s or {}).get("dashboards") or {}).items():
            total[name] += int(count)
    return dict(sorted(total.items()))


def recent_errors(workers: Iterable[Mapping[str, Any]], limit: int = MAX_ERRORS) -> list[dict]:
    """The workers' recent errors merged, newest first, each naming its worker."""
    merged = [{**e, "worker": worker_name(w["id"])}
              for w in workers for e in ((w["stats"] or {}).get("errors") or [])]
    merged.sort(key=lambda e: e.get("at") or 0, reverse=True)
    return merged[:limit]


def query_exists(conn: Connection, kind: str, ident: int) -> bool:
    """Whether the run (or the ticket) is still in flight."""
    sql = ("SELECT 1 FROM query_runs WHERE run_id = :id" if kind == RUN
           else "SELECT 1 FROM query_tickets WHERE id = :id")
    return conn.execute(text(sql), {"id": ident}).first() is not None


def ask_to_cancel(conn: Connection, channel: str, ref: str) -> None:
    """NOTIFY every worker (sent when the caller's transaction commits)."""
    conn.execute(text("SELECT pg_notify(:channel, :ref)"), {"channel": channel, "ref": ref})
