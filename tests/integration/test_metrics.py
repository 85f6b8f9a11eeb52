"""GET /metrics on a real site (nginx, gunicorn with 4 workers, PostgreSQL): every worker's
values summed (prometheus-client's multiprocess mode), counts that match a known load, who may
read it, the edge's own endpoint, and a SIGKILLed worker's gauges gone.

The module's own site allows only 192.0.2.0/24 (TEST-NET-1, never this machine) to read
without logging in, so its scrapes are an admin's and loopback is refused; the shared `site`
keeps the default (loopback) for the allowed-address case."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import urllib.request
from collections import Counter

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.loadtest.site_client import SiteClient
from app.ops import prestart
from app.ops.launcher import Site
from tests.conftest import site_env
from tests.integration.helpers import DEMO_PASSWORD, http_get, wait_until, workers

SESSIONS = 12  # N dashboard sessions of the known load, 3 per user
USERS = ("alice", "bob", "carol", "lead")
HOME_LOADS = 5  # M more page requests, of the home page
NOT_HERE = "192.0.2.0/24"

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module")
def metrics_site(pg, output_dir):
    url = pg.create_database("metrics_site")
    # Small pools: the session's shared `site` runs beside this one on the same PostgreSQL
    # (4 x (4 + 10 + 8) connections here, 288 there, max_connections 400).
    env = site_env(url, METRICS_ALLOWED_ADDRESSES=NOT_HERE, DB_POOL_SIZE="4", GUNICORN_THREADS="8")
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=30)
    shutil.rmtree(output_dir / "metrics-site-logs", ignore_errors=True)
    running = Site(env, log_dir=output_dir / "metrics-site-logs").start()
    yield running
    running.stop()


def parse(text: str) -> Samples:
    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items()))


def by_label(samples: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    out: Counter = Counter()
    for n, ls, v in samples:
        if n == name and all(ls.get(k) == x for k, x in labels.items()):
            out[ls[label]] += v
    return dict(out)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


async def logged_in(site, username: str) -> SiteClient:
    client = SiteClient(site.url)
    await client.login(username, DEMO_PASSWORD)
    return client


async def scrape(client: SiteClient) -> Samples:
    response = await client.request("GET", "/metrics")
    assert response.code == 200, response.body[:300]
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return parse(response.body.decode())


def scrape_edge(site) -> Samples:
    with urllib.request.urlopen(site.edge_metrics_url, timeout=10) as r:
        return parse(r.read().decode())


def test_an_allowed_address_reads_metrics_without_logging_in(site):
    assert site.settings.metrics_allowed_addresses == ("127.0.0.0/8", "::1/128")  # the default
    for url in (f"{site.url}/metrics", f"http://{site.settings.gunicorn_bind}/metrics"):
        status, headers, body = http_get(url)
        assert status == 200, body[:300]
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"happiness_http_request_duration_seconds", "happiness_bokeh_servers"} <= names, names


def test_metrics_sum_all_four_workers_and_match_a_known_load(metrics_site):
    site = metrics_site

    async def until(client: SiteClient, holds, message: str, timeout: float = 30) -> Samples:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            samples = await scrape(client)
            if holds(samples):
                return samples
            assert loop.time() < deadline, message
            await asyncio.sleep(0.3)

    async def scenario():
        admin = await logged_in(site, "admin")
        clients = [await logged_in(site, u) for u in USERS]
        before = await scrape(admin)
        pages = await asyncio.gather(*(clients[i % 4].open_dashboard("my-happiness") for i in range(SESSIONS)))
        sessions = []
        for i, page in enumerate(pages):
            assert (await clients[i % 4].fetch_autoload(page)).code == 200
            sessions.append(await clients[i % 4].connect(page, light=True))
        try:
            await asyncio.gather(*(s.wait_for_chart(timeout=60) for s in sessions))
            assert all(s.query_state == "done" for s in sessions)
            for _ in range(HOME_LOADS):
                assert (await clients[0].request("GET", "/")).code == 200
            # Open sessions are sampled at each heartbeat (1 s here): wait for all N.
            held = await until(admin, lambda s: total(s, "happiness_sessions_open", dashboard="my-happiness")
                               - total(before, "happiness_sessions_open", dashboard="my-happiness") == SESSIONS,
                               "the sessions-open gauge never showed the N open sessions")
            # A live update: one entry of alice reaches her 3 open charts (and nobody else's).
            await asyncio.gather(*(s.settle(0.5) for s in sessions))
            with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO happiness_entries (user_id, team_id, score) SELECT id, team_id, 7 "
                            "FROM users WHERE username = 'alice'")
            live = await until(admin, lambda s: delta(s, before, "happiness_live_updates_total") >= 3,
                               "the live update never reached alice's charts")
            await asyncio.gather(*(s.settle(1.0) for s in sessions))
            after = await scrape(admin)
        finally:
            for s in sessions:
                s.close()
        return before, held, live, after, {p.worker for p in pages}

    before, held, live, after, page_workers = asyncio.run(scenario())
    registered = set(workers(site))
    assert len(registered) == 4

    # All four workers appear, each with its Bokeh server up, and each created sessions.
    servers = by_label(after, "happiness_bokeh_servers", "worker")
    assert {w for w, v in servers.items() if v == 1} == registered, servers
    created = {w: v - by_label(before, "happiness_sessions_created_total", "worker").get(w, 0)
               for w, v in by_label(after, "happiness_sessions_created_total", "worker").items()}
    assert page_workers == registered  # Flask spread the 12 pages over all four
    assert {w for w, v in created.items() if v > 0} == registered, created
    open_now = by_label(held, "happiness_sessions_open", "worker", dashboard="my-happiness")
    assert set(open_now) == registered, open_now

    # Counts that match the load exactly.
    assert sum(created.values()) == SESSIONS
    assert delta(after, before, "happiness_sessions_created_total", dashboard="my-happiness") == SESSIONS
    assert delta(after, before, "happiness_http_request_duration_seconds_count",
                 endpoint="dashboards.show", status="200") == SESSIONS
    assert delta(after, before, "happiness_http_request_duration_seconds_count",
                 endpoint="dashboards.home", status="200") == HOME_LOADS
    assert delta(after, before, "happiness_time_to_chart_seconds_count", dashboard="my-happiness") == SESSIONS
    assert delta(after, before, "happiness_query_user_queue_wait_seconds_count", dashboard="my-happiness") == SESSIONS
    # Each session's query either ran its own statement or shared another's (same user, same SQL).
    executed = delta(after, before, "happiness_query_duration_seconds_count", dashboard="my-happiness", outcome="ok")
    shared = delta(after, before, "happiness_query_shared_total")
    assert executed + shared == SESSIONS, (executed, shared)
    assert 4 <= executed  # four users: four distinct queries at least
    assert delta(after, before, "happiness_query_slot_wait_seconds_count", dashboard="my-happiness") == executed
    assert delta(after, before, "happiness_statement_timeouts_total") == 0
    # alice held 3 of the 12 sessions: her entry is 3 updates, 3 latencies, nothing more.
    assert delta(after, before, "happiness_live_updates_total", dashboard="my-happiness") == 3
    assert delta(after, before, "happiness_live_update_latency_seconds_count", dashboard="my-happiness") == 3
    latency_sum = delta(after, before, "happiness_live_update_latency_seconds_sum", dashboard="my-happiness")
    assert 0 < latency_sum < 3 * 10, latency_sum  # generous: a correctness bound, not a speed test
    # Histograms are cumulative: +Inf holds every observation.
    assert delta(after, before, "happiness_time_to_chart_seconds_bucket", dashboard="my-happiness", le="+Inf") \
        == SESSIONS


def test_metrics_need_an_admin_or_an_allowed_address(metrics_site):
    site = metrics_site

    async def scenario() -> dict[str, int]:
        codes = {"anonymous": (await SiteClient(site.url).request("GET", "/metrics")).code}
        for username in ("alice", "lead", "admin"):
            codes[username] = (await (await logged_in(site, username)).request("GET", "/metrics")).code
        return codes

    assert asyncio.run(scenario()) == {"anonymous": 403, "alice": 403, "lead": 403, "admin": 200}
    # A forged X-Forwarded-For naming an allowed address does not help: nginx appends the real
    # one, which is what counts; straight to gunicorn, the connecting address counts too.
    forged = {"X-Forwarded-For": "192.0.2.7"}
    assert http_get(f"{site.url}/metrics", forged)[0] == 403
    assert http_get(f"http://{site.settings.gunicorn_bind}/metrics", forged)[0] == 403
    assert http_get(f"http://{site.settings.gunicorn_bind}/metrics")[0] == 403


def test_a_sigkilled_workers_gauges_go_and_its_counts_stay(metrics_site):
    site = metrics_site

    async def read() -> Samples:
        return await scrape(await logged_in(site, "admin"))

    before, edge_before = asyncio.run(read()), scrape_edge(site)
    victim, (_port, pid) = sorted(workers(site).items())[0]
    assert by_label(before, "happiness_bokeh_servers", "worker").get(victim) == 1
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid not in {p for _, p in workers(site).values()} and len(workers(site)) == 4, 60,
               "no replacement registered")

    def servers_up() -> Samples | None:
        samples = asyncio.run(read())
        up = by_label(samples, "happiness_bokeh_servers", "worker")
        return samples if all(up.get(w, 0) >= 1 for w in workers(site)) else None
    # The replacement's Bokeh server counts itself once it has started (it registered first).
    after = wait_until(servers_up, 30, "the replacement's Bokeh server never showed")
    # Exactly one live server per registered worker: the dead one's gauge went with it
    # (mark_process_dead in child_exit), whether or not the replacement took its name.
    assert by_label(after, "happiness_bokeh_servers", "worker") == {w: 1.0 for w in workers(site)}
    assert set(by_label(after, "happiness_sessions_open", "worker")) <= set(workers(site))
    # Counters of the dead worker stay in the sums: Prometheus counters never go down.
    assert total(after, "happiness_sessions_created_total") >= total(before, "happiness_sessions_created_total")
    assert by_label(after, "happiness_sessions_created_total", "worker").get(victim) == \
        by_label(before, "happiness_sessions_created_total", "worker").get(victim)

    # The edge heard the row go and the replacement's come, and reloaded nginx for them.
    edge_after = wait_until(lambda: (lambda s: delta(s, edge_before, "happiness_registry_changes_total", op="INSERT")
                                     >= 1 and s)(scrape_edge(site)), 10, "the edge never heard the new worker")
    assert delta(edge_after, edge_before, "happiness_registry_changes_total", op="DELETE") == 1
    assert delta(edge_after, edge_before, "happiness_registry_changes_total", op="INSERT") == 1
    assert delta(edge_after, edge_before, "happiness_nginx_reloads_total", result="ok") >= 1
    assert total(edge_after, "happiness_nginx_reloads_total", result="rejected") == 0
