"""Live updates on the live site (4 workers, nginx, PostgreSQL): a new entry reaches every open
chart allowed to see it, on every worker, as one delta; nobody else's; none lost, none twice."""
from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import panel  # noqa: F401  (registers Panel's models for documents pulled over the websocket)
import psycopg2
import pytest

from app.loadtest.site_client import BokehSession
from tests.integration.helpers import account, mint, principal, workers

DELTAS = ("ColumnsStreamed", "ColumnsPatched")


def ws_url(site, worker: str, dashboard: str) -> str:
    return site.url.replace("http", "ws", 1) + f"/bokeh/{worker}/{dashboard}/ws"


def team_id(site, name: str) -> int:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM teams WHERE name = %s", (name,))
        return cur.fetchone()[0]


def write(site, username: str, score: int, note: str = "") -> int:
    """What the site's write does: one transaction, one row (the trigger notifies)."""
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO happiness_entries (user_id, team_id, score, note) "
                    "SELECT id, team_id, %s, %s FROM users WHERE username = %s RETURNING id", (score, note, username))
        return cur.fetchone()[0]


def count_entries(site, where: str, args: tuple, days: int = 365) -> int:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM happiness_entries WHERE {where} "
                    "AND created_at >= now() - make_interval(days => %s)", (*args, days))
        return cur.fetchone()[0]


async def open_all(site, specs: list[tuple[str, str, dict]]) -> list[BokehSession]:
    """Sessions for (user, dashboard, params), round-robin over the workers, charted."""
    names = sorted(workers(site))
    sessions = await asyncio.gather(*(
        BokehSession.connect(ws_url(site, names[i % len(names)], dash), mint(site, user, dash, names[i % len(names)], params),
                             site.url)
        for i, (user, dash, params) in enumerate(specs)))
    await asyncio.gather(*(s.wait_for_chart(timeout=30) for s in sessions))
    for s in sessions:
        assert s.query_state == "done", s.model("query-status").text
    await asyncio.gather(*(s.wait_for(lambda d: d.select_one({"name": "live-status"}).text.startswith("live"), 10)
                           for s in sessions))
    return list(sessions)


async def settle(sessions: list[BokehSession], seconds: float) -> None:
    await asyncio.gather(*(s.settle(seconds) for s in sessions))


def deltas(session: BokehSession, since: float) -> list[str]:
    return [kind for t, kind, _ in session.data_events if t >= since]


def test_one_write_reaches_exactly_the_charts_allowed_to_see_it_on_every_worker(site):
    platform, design = team_id(site, "Platform"), team_id(site, "Design")
    specs = [  # (user, dashboard, params, sees bob's entry)
        ("bob", "my-happiness", {"days": 365}, True),
        ("alice", "my-happiness", {"days": 365}, False),
        ("alice", "team", {"days": 365}, True),
        ("lead", "team", {"days": 365}, True),
        ("lead", "teams", {"window": 7}, True),
        ("admin", "team", {"days": 365, "team": platform}, True),
        ("admin", "team", {"days": 365, "team": design}, False),
        ("admin", "teams", {"window": 7}, True),
        ("carol", "team", {"days": 365}, False),
        ("carol", "my-happiness", {"days": 365}, False),
        ("admin", "my-happiness", {"days": 365}, False),
        ("lead", "teams", {"window": 3, "end": (dt.date.today() - dt.timedelta(days=2)).isoformat()}, False),
    ]

    async def scenario():
        sessions = await open_all(site, [(u, d, p) for u, d, p, _ in specs])
        assert len({s.worker for s in sessions}) == 4
        await settle(sessions, 0.5)
        before = time.monotonic()
        points = len(sessions[0].model("chart-source").data["time"])
        write(site, "bob", 4, "tired")
        await asyncio.gather(*(s.wait_for(lambda d, s=s: deltas(s, before), 10)
                               for s, spec in zip(sessions, specs) if spec[3]))
        await settle(sessions, 1.0)  # anything else that might come, comes now
        received = [deltas(s, before) for s in sessions]
        bob_chart = sessions[0].model("chart-source").data
        for s in sessions:
            s.close()
        return received, points, bob_chart
    received, points, bob_chart = asyncio.run(scenario())
    for (user, dash, params, sees), events in zip(specs, received):
        assert len(events) == (1 if sees else 0), (user, dash, params, events)
        assert all(kind in DELTAS for kind in events), (user, dash, events)
    assert len(bob_chart["time"]) == points + 1 and bob_chart["score"][-1] == 4



def test_a_burst_of_writes_reaches_each_chart_as_few_updates_with_every_point(site):
    """30 writes as fast as one connection commits them: every point arrives, batched."""
    async def scenario():
        sessions = await open_all(site, [("bob", "my-happiness", {"days": 365}), ("alice", "team", {"days": 365})])
        mine, team = sessions
        points = len(mine.model("chart-source").data["time"])
        entries_before = sum(team.model("chart-source").data["entries"])
        before = time.monotonic()
        with psycopg2.connect(site.settings.database_url) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                for i in range(30):
                    cur.execute("INSERT INTO happiness_entries (user_id, team_id, score) "
                                "SELECT id, team_id, %s FROM users WHERE username = 'bob'", (1 + i % 10,))
        await mine.wait_for(lambda d: len(d.select_one({"name": "chart-source"}).data["time"]) >= points + 30, 10)
        await settle(sessions, 0.5)
        result = (len(mine.model("chart-source").data["time"]) - points, len(deltas(mine, before)),
                  sum(team.model("chart-source").data["entries"]) - entries_before, len(deltas(team, before)))
        for s in sessions:
            s.close()
        return result
    new_points, mine_updates, new_entries, team_updates = asyncio.run(scenario())
    assert new_points == 30 and new_entries == 30
    # One update per 50 ms batch: 30 commits take well under a second here.
    assert mine_updates < 15 and team_updates < 15, (mine_updates, team_updates)


def test_entries_written_while_the_listeners_are_down_arrive_once_after_they_reconnect(site):
    async def scenario():
        sessions = await open_all(site, [("bob", "my-happiness", {"days": 365}) for _ in range(4)])
        counts = [len(s.model("chart-source").data["time"]) for s in sessions]
        with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'bokeh-%-listen'")
            assert cur.rowcount == 4
        # Every chart says its updates are interrupted instead of pretending to be current.
        await asyncio.gather(*(s.wait_for(lambda d: d.select_one({"name": "live-status"}).tags == ["paused"], 5)
                               for s in sessions))
        assert all(s.model("live-status").text.startswith("Live updates paused") for s in sessions)
        for score in (2, 3, 5):  # while nobody listens: these notifications are lost
            write(site, "bob", score)
        await asyncio.gather(*(s.wait_for(lambda d: len(d.select_one({"name": "chart-source"}).data["time"]) >= c + 3, 15)
                               for s, c in zip(sessions, counts)))
        for score in (6, 7):  # after the reconnect
            write(site, "bob", score)
        await asyncio.gather(*(s.wait_for(lambda d: len(d.select_one({"name": "chart-source"}).data["time"]) >= c + 5, 15)
                               for s, c in zip(sessions, counts)))
        await settle(sessions, 1.5)
        result = [(len(s.model("chart-source").data["time"]) - c, s.model("chart-source").data["score"][-5:],
                   s.model("live-status").text) for s, c in zip(sessions, counts)]
        for s in sessions:
            s.close()
        return result
    for added, last_scores, status in asyncio.run(scenario()):
        assert added == 5 and sorted(last_scores) == [2, 3, 5, 6, 7], (added, last_scores)
        assert status.startswith("live · updated"), status


def test_writes_racing_the_opening_queries_are_shown_exactly_once(site):
    """Sessions open while bob writes every 20 ms: each chart ends with exactly the entries
    in the database, whether a write landed before, during or after its opening query."""
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            write(site, "bob", 5)
            time.sleep(0.02)

    async def scenario():
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            sessions = []
            for _ in range(3):  # staggered, so opening queries land in the middle of the writes
                sessions += await open_all(site, [("bob", "my-happiness", {"days": 365}), ("alice", "team", {"days": 365}),
                                                  ("lead", "team", {"days": 365})])
        finally:
            stop.set()
            thread.join()
        await settle(sessions, 1.5)
        result = [(s.model("chart-source").data, s.model("dashboard").tags) for s in sessions]
        for s in sessions:
            s.close()
        return result
    charts = asyncio.run(scenario())
    bob = principal(site, "bob")
    mine = count_entries(site, "user_id = %s", (bob.user_id,))
    team = count_entries(site, "team_id = %s", (bob.team_id,))
    for data, tags in charts:
        if "time" in data:
            assert len(data["time"]) == mine, tags
        else:
            assert sum(data["entries"]) == team, tags


def test_the_teams_cache_is_not_served_after_a_write_that_changes_it(site):
    async def teams_point(user: str, worker: str) -> float:
        s = await BokehSession.connect(ws_url(site, worker, "teams"), mint(site, user, "teams", worker, {"window": 1}),
                                       site.url)
        await s.wait_for_chart(timeout=30)
        data = s.model("chart-source").data
        s.close()
        return data["ys"][data["team"].index("Design")][-1]
    names = sorted(workers(site))
    first = asyncio.run(teams_point("lead", names[0]))
    cached = asyncio.run(teams_point("admin", names[1]))  # within the 60 s cache
    assert cached == first
    for _ in range(3):
        write(site, "carol", 10 if first < 9 else 1)
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT avg(score)::float8 FROM happiness_entries e JOIN teams t ON t.id = e.team_id "
                    "WHERE t.name = 'Design' AND (created_at AT TIME ZONE 'UTC')::date = (now() AT TIME ZONE 'UTC')::date")
        truth = cur.fetchone()[0]
    after = asyncio.run(teams_point("admin", names[2]))
    assert after != first and after == pytest.approx(truth)


def test_an_empty_chart_says_so_until_its_first_entry(site):
    account(site, "newbie", role="member", loadtest=False)

    async def scenario():
        new, bob = await open_all(site, [("newbie", "my-happiness", {"days": 365}), ("bob", "my-happiness", {"days": 365})])
        before = (new.model("chart-empty").visible, new.model("chart-empty").text, bob.model("chart-empty").visible)
        write(site, "newbie", 7)
        await new.wait_for(lambda d: len(d.select_one({"name": "chart-source"}).data["time"]) == 1, 10)
        await new.settle(0.3)
        after = new.model("chart-empty").visible
        for s in (new, bob):
            s.close()
        return before, after
    (empty_shown, text, bob_shown), shown_after = asyncio.run(scenario())
    assert empty_shown and text == "No entries yet" and not bob_shown
    assert not shown_after
