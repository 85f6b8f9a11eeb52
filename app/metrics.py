"""Every metric of the site, in one place (prometheus-client), and how /metrics reads them.

Names start with `happiness_` and carry their unit (`_seconds`, `_total`). Labels are bounded:
dashboard names (a fixed set, app.access.DASHBOARDS), Bokeh worker names (w1, w2, ...: one per
live worker, plus those that died since the gunicorn master started), Flask endpoint names and
HTTP statuses, and small fixed sets (`cause`, `how`, `outcome`, `result`, `op`). Never user ids,
SQL or paths. Every metric has labels, so a process creates values only for what it does: the
edge's counters are not zeros in every worker's files.

Multiprocess mode: gunicorn runs several workers, so prometheus-client keeps each process's
values in memory-mapped files under PROMETHEUS_MULTIPROC_DIR, and a scrape merges them
(`exposition`). The variable must be set before prometheus_client is imported, which is why
the process that starts gunicorn sets it (app.ops.launcher, docker-compose.yml), not
gunicorn.conf.py; the master empties the directory on start (`reset_directory`) and forgets a
dead worker's live gauges (`forget_process`). Counters and histograms of dead workers stay
in the sums, as Prometheus expects of a counter.

The edge (app.edge) is a separate process, possibly on another host: its two counters are
served by its own endpoint (EDGE_METRICS_LISTEN), not through the workers' directory.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Buckets, in seconds. Flask pages: most answer in milliseconds, a login hashes a password
# (~0.3 s), and a request waiting on a busy database may take seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Queries and time to chart: from milliseconds (a cached result) to STATEMENT_TIMEOUT_SECONDS
# (60 s by default) plus the waits in line before it.
QUERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0)
# Waits in line: nothing at all when the site keeps up, up to a whole query when it does not.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Live updates: the target is p99 <= 150 ms from commit to the chart (README, "Benchmark").
LIVE_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

# Flask ---------------------------------------------------------------------------------------
HTTP_REQUEST_SECONDS = Histogram(
    "happiness_http_request_duration_seconds", "Flask requests by endpoint and status, from before_request "
    "to after_request", ["endpoint", "status"], buckets=REQUEST_BUCKETS)

# Bokeh sessions ----------------------------------------------------------------------------
BOKEH_SERVERS = Gauge(
    "happiness_bokeh_servers", "1 per worker whose Bokeh server runs (gone when the process dies)",
    ["worker"], multiprocess_mode="livesum")
SESSIONS_CREATED = Counter(
    "happiness_sessions_created_total", "Bokeh sessions created (documents built)", ["worker", "dashboard"])
SESSIONS_OPEN = Gauge(
    "happiness_sessions_open", "Bokeh sessions a worker holds, sampled at every registry heartbeat",
    ["worker", "dashboard"], multiprocess_mode="livesum")
BOKEH_CPU_SECONDS = Counter(
    "happiness_bokeh_cpu_seconds", "CPU of the workers' Bokeh loops by phase: build (a new session's "
    "document), pull (a document serialized for its page), patch (changes serialized: results, live "
    "updates); app/serving/cpu_phases.py", ["phase"])
TIME_TO_CHART_SECONDS = Histogram(
    "happiness_time_to_chart_seconds", "From a document's build to its chart's first data applied",
    ["dashboard"], buckets=QUERY_BUCKETS)

# Queries -------------------------------------------------------------------------------------
QUERY_SECONDS = Histogram(
    "happiness_query_duration_seconds", "Statements executed, from their worker slot to their rows "
    "(outcome ok or error; cancelled ones are not observed)", ["dashboard", "outcome"], buckets=QUERY_BUCKETS)
USER_QUEUE_WAIT_SECONDS = Histogram(
    "happiness_query_user_queue_wait_seconds", "Wait for one of the user's places in line (USER_QUERY_LIMIT)",
    ["dashboard"], buckets=WAIT_BUCKETS)
SLOT_WAIT_SECONDS = Histogram(
    "happiness_query_slot_wait_seconds", "Wait for one of the worker's database slots (DB_POOL_SIZE)",
    ["dashboard"], buckets=WAIT_BUCKETS)
QUERY_SHARED = Counter(
    "happiness_query_shared_total", "Queries answered without running their own statement: how=local (joined "
    "a run of this worker), remote (followed another worker's run), cached (a stored result)", ["how"])
QUERY_CANCELLED = Counter(
    "happiness_query_cancellations_total", "Session queries stopped before their result: cause=button, "
    "page_closed, session_destroyed, prefetch_unclaimed", ["dashboard", "cause"])
STATEMENT_TIMEOUTS = Counter(
    "happiness_statement_timeouts_total", "Statements PostgreSQL stopped at STATEMENT_TIMEOUT_SECONDS",
    ["dashboard"])

# Live updates --------------------------------------------------------------------------------
LIVE_UPDATES = Counter(
    "happiness_live_updates_total", "Live updates applied to a chart (one per document and batch)", ["dashboard"])
LIVE_LATENCY_SECONDS = Histogram(
    "happiness_live_update_latency_seconds", "Per entry and chart: from the entry's commit (its created_at, "
    "the database's clock) to its update applied to the document", ["dashboard"], buckets=LIVE_BUCKETS)

# The edge (served by its own endpoint) -------------------------------------------------------------
REGISTRY_CHANGES = Counter(
    "happiness_registry_changes_total", "Registry changes the edge heard: op=INSERT (a worker came), DELETE "
    "(one went), UPDATE (one moved)", ["op"])
NGINX_RELOADS = Counter(
    "happiness_nginx_reloads_total", "Route changes: result=ok (nginx reloaded) or rejected (nginx -t failed)",
    ["result"])


def multiprocess_dir() -> str | None:
    """The directory this process writes its values to, or None (single-process mode)."""
    return os.environ.get(MULTIPROC_ENV) or None


def reset_directory(path: str | os.PathLike) -> Path:
    """Create the directory and empty it of a previous run's files (the gunicorn master, on start:
    no worker exists yet, so every file there is stale)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    return directory


def forget_process(pid: int, path: str | os.PathLike | None = None) -> None:
    """A worker died (gunicorn's child_exit): its live gauges stop counting."""
    path = path or multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, str(path))


def exposition(path: str | os.PathLike | None) -> tuple[bytes, str]:
    """The text every worker's files in `path` sum to (a fresh registry per scrape, as
    multiprocess mode requires), and its content type. Without a directory (a single process:
    `flask run`, unit tests) this process's own values."""
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(listen: str) -> None:
    """This process's own metrics over HTTP on `listen` ("127.0.0.1:9108", "[::1]:9108"), on a
    daemon thread, with no access control: bind it to an address only scrapers reach (the edge)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a metrics address must look like 127.0.0.1:9108, got {listen!r}")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
