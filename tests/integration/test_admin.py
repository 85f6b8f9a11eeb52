"""The admin console on the live site (four workers): who may open it, what it shows of the
whole site, and a Cancel that stops another user's query in PostgreSQL and tells its sessions."""
from __future__ import annotations

import asyncio
import json
import re
import time

import panel  # noqa: F401  (registers Panel's models for documents pulled over the websocket)
import psycopg2

from app.loadtest.site_client import SiteClient
from tests.integration.helpers import DEMO_PASSWORD, account, wait_until, workers
from tests.integration.test_queries import open_sessions, status_text

ADMIN_CANCELLED = "Cancelled by an administrator."


def active_sleeps(site) -> int:
    """Backends of any worker running the slow query right now."""
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bokeh-w%%' "
                    "AND state = 'active' AND query LIKE '%%pg_sleep%%'")
        return cur.fetchone()[0]


async def admin_client(site) -> tuple[SiteClient, str]:
    client = SiteClient(site.url)
    await client.login("admin", DEMO_PASSWORD)
    page = await client.request("GET", "/admin")
    assert page.code == 200
    return client, re.search(r'name="csrf-token" content="([^"]+)"', page.body.decode()).group(1)


async def state(client: SiteClient) -> dict:
    response = await client.request("GET", "/admin/state", headers={"Accept": "application/json"})
    assert response.code == 200
    return json.loads(response.body)


async def poll_state(client: SiteClient, holds, timeout: float, message: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await state(client)
        if holds(current):
            return current
        await asyncio.sleep(0.2)
    raise AssertionError(f"{message}; last state: {json.dumps(current)[:2000]}")


def test_members_and_leads_get_403_and_anonymous_visitors_the_login_page(site):
    account(site, "console-lead", role="lead", loadtest=False)

    async def scenario():
        codes = {}
        for user in ("alice", "console-lead"):
            client = SiteClient(site.url)
            await client.login(user, DEMO_PASSWORD)
            codes[user] = [(await client.request(method, path, form={} if method == "POST" else None)).code
                           for method, path in
                           (("GET", "/admin"), ("GET", "/admin/state"), ("POST", "/admin/queries/run-1/cancel"))]
        anonymous = await SiteClient(site.url).request("GET", "/admin")
        return codes, anonymous.code, anonymous.headers.get("Location", "")
    codes, anonymous, location = asyncio.run(scenario())
    assert codes == {"alice": [403, 403, 403], "console-lead": [403, 403, 403]}
    assert anonymous == 302 and "/login" in location


def test_the_admin_sees_every_worker_with_its_figures(site):
    names = sorted(workers(site))
    assert len(names) == 4

    async def scenario():
        client, _ = await admin_client(site)
        return await poll_state(client, lambda s: sorted(w["worker"] for w in s["workers"] if w["alive"]) == names
                                and all(w["rss_bytes"] and w["queries_running"] is not None for w in s["workers"]),
                                10, "the console does not show the four workers with their figures")
    current = asyncio.run(scenario())
    pids = {w["worker"]: w["pid"] for w in current["workers"]}
    assert pids == {name: pid for name, (_port, pid) in workers(site).items()}
    assert all(w["heartbeat_age_s"] < 5 and w["uptime_s"] > 0 for w in current["workers"])


def test_cancel_stops_another_users_shared_query_and_tells_every_session(site):
    """Two sessions of another user share one run across two workers (leader and follower);
    the admin cancels it: the backend is idle within 1 s, both charts say so and offer Run again."""
    account(site, "console-user", query_limit=10)
    names = sorted(workers(site))[:2]
    params = {"seconds": 30, "variant": 777001}

    async def scenario():
        client, csrf = await admin_client(site)
        sessions = await open_sessions(site, "console-user", "slow-query", [params, params], names)
        await asyncio.gather(*(s.settle(0.5) for s in sessions))
        wait_until(lambda: active_sleeps(site) == 1, 10, "the shared slow query never started")
        current = await poll_state(
            client, lambda s: any(q["users"] == ["console-user"] and q["sessions"] == 2 for q in s["queries"]),
            10, "the console does not list the user's query shared by two sessions")
        (query,) = [q for q in current["queries"] if q["users"] == ["console-user"]]
        assert (query["state"], query["dashboard"], query["cache_ttl"]) == ("running", "slow-query", 0.0)
        assert query["worker"] in names and query["elapsed_s"] >= 0
        sent = time.monotonic()
        response = await client.request("POST", f"/admin/queries/{query['id']}/cancel",
                                        form={},
                                        headers={"X-CSRFToken": csrf, "Accept": "application/json"})
        assert response.code == 202, response.body
        while active_sleeps(site) and time.monotonic() - sent < 10:
            await asyncio.sleep(0.01)
        idle_after = time.monotonic() - sent
        await asyncio.gather(*(s.wait_for(lambda d: d.select_one({"name": "query-status"}).tags == ["cancelled"],
                                          timeout=10) for s in sessions))
        shown = [(s.query_state, status_text(s), s.model("query-cancel").visible, s.model("query-cancel").label)
                 for s in sessions]
        after = await poll_state(client, lambda s: not any(q["id"] == query["id"] for q in s["queries"]), 5,
                                 "the cancelled query is still listed")
        for s in sessions:
            s.close()
        return idle_after, shown, after
    idle_after, shown, after = asyncio.run(scenario())
    print(f"admin cancel to idle backend: {idle_after * 1000:.0f} ms")
    assert idle_after < 1.0, f"the backend still ran {idle_after:.2f} s after the cancel"
    assert shown == [("cancelled", ADMIN_CANCELLED, True, "Run again")] * 2
    assert not any(q["users"] == ["console-user"] for q in after["queries"])


def test_cancel_takes_a_query_out_of_its_users_line(site):
    account(site, "console-queued", query_limit=1)
    (name,) = sorted(workers(site))[2:3]

    async def scenario():
        client, csrf = await admin_client(site)
        # One after the other: opened together, either could take the user's one place.
        (first,) = await open_sessions(site, "console-queued", "slow-query", [{"seconds": 30, "variant": 777002}], [name])
        sessions = [first]
        try:
            await poll_state(client, lambda s: [q["state"] for q in s["queries"]
                                                if q["users"] == ["console-queued"]] == ["running"],
                             10, "the console does not show the first query running")
            (second,) = await open_sessions(site, "console-queued", "slow-query",
                                            [{"seconds": 30, "variant": 777003}], [name])
            sessions.append(second)
            current = await poll_state(client, lambda s: [q["state"] for q in s["queries"]
                                                          if q["users"] == ["console-queued"]] == ["running", "queued"],
                                       10, "the console does not show one running and one queued query")
            running, queued = [q for q in current["queries"] if q["users"] == ["console-queued"]]
            assert queued["id"].startswith("ticket-") and queued["position"] == 1
            response = await client.request("POST", f"/admin/queries/{queued['id']}/cancel",
                                            form={}, headers={"X-CSRFToken": csrf})
            assert response.code == 202
            await second.wait_for(lambda d: d.select_one({"name": "query-status"}).tags == ["cancelled"], timeout=10)
            await first.settle(0.3)
            states = (first.query_state, second.query_state, status_text(second))
            response = await client.request("POST", f"/admin/queries/{running['id']}/cancel",
                                            form={}, headers={"X-CSRFToken": csrf})
            assert response.code == 202
            await first.wait_for(lambda d: d.select_one({"name": "query-status"}).tags == ["cancelled"], timeout=10)
            return states
        finally:  # a failure here must not leave sessions that hold later tests' workers
            for s in sessions:
                s.close()
    assert asyncio.run(scenario()) == ("running", "cancelled", ADMIN_CANCELLED)
    wait_until(lambda: active_sleeps(site) == 0, 3, "the cancelled query still runs")


def test_an_error_a_user_was_shown_is_listed_with_its_worker_and_dashboard(site):
    account(site, "console-error", query_limit=10)
    name = sorted(workers(site))[3]

    async def scenario():
        client, _ = await admin_client(site)
        (s,) = await open_sessions(site, "console-error", "slow-query", [{"seconds": 30, "variant": 777004}], [name])
        wait_until(lambda: active_sleeps(site) >= 1, 10, "the slow query never started")
        with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:  # fails it, from outside
            cur.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                        "AND state = 'active' AND query LIKE '%%pg_sleep%%'", (f"bokeh-{name}",))
        await s.wait_for_chart(timeout=10)
        told = status_text(s)
        s.close()
        current = await poll_state(client, lambda st: any(e["worker"] == name and e["message"] == told
                                                          for e in st["errors"]),
                                   10, "the error is not in the console")
        return s.query_state, told, current["errors"]
    state, told, errors = asyncio.run(scenario())
    assert state == "error" and told
    (error,) = [e for e in errors if e["worker"] == name and e["message"] == told]
    assert error["dashboard"] == "slow-query" and abs(error["at"] - time.time()) < 60
