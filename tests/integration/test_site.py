"""The whole serving path with real parts: PostgreSQL, gunicorn with 4 workers, nginx."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter

import panel  # noqa: F401  (registers Panel's models for documents pulled over the websocket)
from bokeh.util.token import generate_jwt_token, generate_session_id
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from app import tokens
from app.loadtest.site_client import BokehSession, SiteClient
from tests.integration.helpers import (
    DEMO_PASSWORD,
    account,
    assert_clean_log,
    http_get,
    mint,
    principal,
    quiet,
    sleeping_queries,
    wait_until,
    workers,
)

# -- registry and routing ---------------------------------------------------------------

def test_four_workers_registered_on_distinct_ports_and_routed(site):
    registered = workers(site)
    lo, hi = site.settings.bokeh_port_range
    ports = [port for port, _ in registered.values()]
    assert len(registered) == 4
    assert len(set(ports)) == 4 and all(lo <= p <= hi for p in ports)
    for name in registered:
        status, headers, _ = http_get(f"{site.url}/bokeh/{name}/my-happiness/autoload.js")
        assert status == 403, name  # reached the worker, which wants a token
        assert headers.get("X-Bokeh-Worker") == name
    status, _, body = http_get(f"{site.url}/bokeh/w999999/my-happiness/autoload.js")
    assert status == 404 and "No such dashboard worker" in body


def test_bokehjs_is_served_by_nginx_from_disk(site):
    name = next(iter(workers(site)))
    status, headers, body = http_get(f"{site.url}/bokeh/{name}/static/js/bokeh.min.js")
    assert status == 200 and "Bokeh" in body[:2000]
    assert "X-Bokeh-Worker" not in headers  # not proxied to the worker


def test_api_workers_is_for_admins(site):
    async def scenario():
        anonymous = SiteClient(site.url)
        assert (await anonymous.request("GET", "/api/workers")).code == 401
        alice = SiteClient(site.url)
        await alice.login("alice", DEMO_PASSWORD)
        assert (await alice.request("GET", "/api/workers")).code == 403
        admin = SiteClient(site.url)
        await admin.login("admin", DEMO_PASSWORD)
        response = await admin.request("GET", "/api/workers")
        return response.code, json.loads(response.body)
    code, listed = asyncio.run(scenario())
    assert code == 200
    assert {w["worker"] for w in listed} == set(workers(site))
    for entry in listed:
        assert {"worker", "host", "port", "pid", "sessions", "heartbeat_at"} <= set(entry)
    assert status_of(f"{site.url}/healthz") == 200


def status_of(url: str) -> int:
    return http_get(url)[0]


# -- sessions: 40 loads, sticky, spread ---------------------------------------------------

def test_forty_dashboard_loads_get_their_chart_on_the_worker_that_holds_them(site):
    async def one(client: SiteClient) -> tuple[str, str, str, int, str]:
        page = await client.open_dashboard("my-happiness")
        autoload = await client.fetch_autoload(page)
        assert autoload.code == 200, autoload.body[:200]
        session = await client.connect(page)
        try:
            await session.wait_for_chart(timeout=30)
            rows = len(session.model("chart-source").data["score"])
            return page.worker, autoload.headers.get("X-Bokeh-Worker"), session.worker, rows, session.query_state
        finally:
            session.close()

    async def scenario():
        clients = []
        for username in ("alice", "bob", "carol", "lead"):
            client = SiteClient(site.url)
            await client.login(username, DEMO_PASSWORD)
            clients.append(client)
        return await asyncio.gather(*(one(clients[i % 4]) for i in range(40)))

    quiet(site)  # balance is judged on these 40 alone
    results = asyncio.run(scenario())
    assert len(results) == 40
    for page_worker, autoload_worker, document_worker, rows, state in results:
        assert page_worker == autoload_worker == document_worker
        assert state == "done" and rows > 0
    spread = Counter(r[0] for r in results)
    assert set(spread) == set(workers(site)), spread
    assert max(spread.values()) - min(spread.values()) <= 4, spread


# -- token and origin rejections ---------------------------------------------------------

def _autoload(base: str, worker: str, dashboard: str, token: str | None) -> int:
    query = f"bokeh-autoload-element=x&bokeh-absolute-url={base}/bokeh/{worker}/{dashboard}"
    if token is not None:
        query += f"&bokeh-token={token}"
    return http_get(f"{base}/bokeh/{worker}/{dashboard}/autoload.js?{query}")[0]


async def _ws_status(base: str, worker: str, dashboard: str, token: str, origin: str) -> int:
    url = base.replace("http", "ws", 1) + f"/bokeh/{worker}/{dashboard}/ws"
    try:
        ws = await websocket_connect(HTTPRequest(url, headers={"Origin": origin}), subprotocols=["bokeh", token])
    except HTTPClientError as exc:
        return exc.code
    ws.close()
    return 101


def test_missing_forged_expired_or_misdirected_tokens_are_refused(site):
    name, (port, _) = sorted(workers(site).items())[0]
    other = sorted(workers(site))[1]
    good = mint(site, "alice", "my-happiness", name, {"days": 30})
    forged_secret = b"x" * 48
    forged = tokens.mint(tokens.SessionClaims(principal(site, "alice"), "my-happiness", {"days": 30}, name),
                         forged_secret, 60)[1]
    expired = mint(site, "alice", "my-happiness", name, {"days": 30}, ttl=-10)
    wrong_board = mint(site, "alice", "teams", name, {})
    wrong_worker = mint(site, "alice", "my-happiness", other, {"days": 30})
    bare = generate_jwt_token(generate_session_id(site.settings.bokeh_secret_bytes, True),
                              secret_key=site.settings.bokeh_secret_bytes, signed=True)
    origin = site.url
    for base in (site.url, f"http://127.0.0.1:{port}"):  # through nginx, and straight at the worker
        assert _autoload(base, name, "my-happiness", good) == 200
        for bad in (None, forged, expired, wrong_worker, bare):
            assert _autoload(base, name, "my-happiness", bad) == 403, (base, bad)
        assert _autoload(base, name, "teams", wrong_board) == 403
        for bad in (forged, expired, wrong_worker, bare):
            assert asyncio.run(_ws_status(base, name, "my-happiness", bad, origin)) == 403
        assert asyncio.run(_ws_status(base, name, "my-happiness", good, "http://evil.example")) == 403
        assert asyncio.run(_ws_status(base, name, "my-happiness", good, origin)) == 101


def test_access_rules_hold_when_urls_are_edited(site):
    async def scenario():
        alice = SiteClient(site.url)
        await alice.login("alice", DEMO_PASSWORD)
        carol_team = principal(site, "carol").team_id
        codes = {
            "teams": (await alice.request("GET", "/dashboards/teams")).code,
            "other team": (await alice.request("GET", f"/dashboards/team?team={carol_team}")).code,
            "user param": (await alice.request("GET", "/dashboards/my-happiness?user=2")).code,
            "bad days": (await alice.request("GET", "/dashboards/my-happiness?days=abc")).code,
            "unknown": (await alice.request("GET", "/dashboards/nope")).code,
            "slow": (await alice.request("GET", "/dashboards/slow-query")).code,
        }
        # Her own team's chart holds only her team's data.
        page = await alice.open_dashboard("team")
        session = await alice.connect(page)
        await session.wait_for_chart(timeout=30)
        title = session.model("chart").title.text
        session.close()
        return codes, title
    codes, title = asyncio.run(scenario())
    assert codes == {"teams": 403, "other team": 403, "user param": 400, "bad days": 400, "unknown": 404, "slow": 403}
    assert title.startswith("Platform")


def test_a_token_cannot_widen_its_scope(site):
    """A validly signed token whose params ask for another team is still refused (403): the
    Bokeh server re-applies the access rules instead of trusting what it was handed."""
    name = sorted(workers(site))[0]
    carol_team = principal(site, "carol").team_id
    token = mint(site, "alice", "team", name, {"days": 30, "team": carol_team})
    own = mint(site, "alice", "team", name, {"days": 30})
    assert _autoload(site.url, name, "team", token) == 403
    assert asyncio.run(_ws_status(site.url, name, "team", token, site.url)) == 403
    assert _autoload(site.url, name, "team", own) == 200


# -- the loop never blocks --------------------------------------------------------------

def test_fast_dashboard_loads_while_twenty_slow_queries_run_on_the_same_worker(site):
    name = sorted(workers(site))[0]
    ws_base = site.url.replace("http", "ws", 1) + f"/bokeh/{name}"

    account(site, "many-queries", query_limit=50)

    async def scenario():
        # Distinct variants: identical queries would share one execution.
        slow = await asyncio.gather(*(
            BokehSession.connect(f"{ws_base}/slow-query/ws",
                                 mint(site, "many-queries", "slow-query", name, {"seconds": 5.0, "variant": i}),
                                 site.url)
            for i in range(20)))
        wait_until(lambda: sleeping_queries(site, name) >= 20, 10, "20 slow queries never ran at once")
        fast = await BokehSession.connect(f"{ws_base}/my-happiness/ws",
                                          mint(site, "alice", "my-happiness", name, {"days": 365}), site.url)
        await fast.wait_for_chart(timeout=10)
        still_running = sleeping_queries(site, name)
        states = [s.query_state for s in slow]
        rows = len(fast.model("chart-source").data["score"])
        for s in (*slow, fast):
            s.close()
        return still_running, states, fast.query_state, rows
    still_running, slow_states, fast_state, rows = asyncio.run(scenario())
    assert fast_state == "done" and rows > 0
    # The fast chart arrived while every one of the 20 slow queries was still in flight.
    assert still_running == 20
    assert slow_states == ["running"] * 20


# -- a killed worker's route goes, its replacement's comes --------------------------------
# Last in this file: it changes the set of workers.

def test_sigkilled_worker_route_disappears_and_replacement_appears(site):
    before = workers(site)
    victim, (_, pid) = sorted(before.items())[-1]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: victim not in workers(site), 15, f"{victim} still registered after SIGKILL")
    wait_until(lambda: site.routed(victim) == 404, 15, f"nginx still routes {victim}")
    after = wait_until(lambda: len(workers(site)) == 4 and workers(site), 30, "no replacement worker registered")
    (replacement,) = set(after) - set(before)
    wait_until(lambda: site.routed(replacement) == 403, 15, f"nginx never routed {replacement}")
    assert victim not in after


def test_the_site_logged_no_uncaught_exception(site, output_dir):
    """Last: everything above ran without an exception escaping into the servers."""
    assert_clean_log(output_dir / "site-logs" / "gunicorn.log")
