"""A dashboard page's database work, on a real PostgreSQL: one connection, one transaction
that loads the user, chooses the worker and sends the prefetch notice, committed at once."""
from __future__ import annotations

import re
import select

import psycopg2
import pytest
from sqlalchemy import event

from app import create_app
from app.channels import prefetch_channel
from app.config import Settings
from app.extensions import db
from app.ops import prestart
from app.ops.launcher import free_port


@pytest.fixture(scope="module")
def site(pg):
    url = pg.create_database(f"page_{free_port()}")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48,
           "REGISTRY_TTL_SECONDS": "3600"}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=2)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a worker to send pages to
        cur.execute("INSERT INTO bokeh_workers (host, port, pid, ready_at) VALUES ('127.0.0.1', 1, 1, now())"
                    " RETURNING id")
        worker_id = cur.fetchone()[0]
    app = create_app(Settings.from_env(env))
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"username": "admin", "password": "demo", "csrf_token": token}).status_code == 302
    return app, client, url, worker_id


def pending(url: str, worker_id: int) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pending FROM bokeh_workers WHERE id = %s", (worker_id,))
        return cur.fetchone()[0]


def test_a_page_takes_one_connection_and_commits_its_choice_and_notice_together(site):
    app, client, url, worker_id = site
    listener = psycopg2.connect(url)
    listener.autocommit = True
    listener.cursor().execute(f"LISTEN {prefetch_channel(worker_id)}")
    statements: list[str] = []
    checkouts: list[int] = []
    with app.app_context():
        engine = db.engine
    on_statement = lambda *args: statements.append(args[2].split()[0].upper())  # noqa: E731
    on_checkout = lambda *args: checkouts.append(1)  # noqa: E731
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        before = pending(url, worker_id)
        response = client.get("/dashboards/slow-query?seconds=1")
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine.pool, "checkout", on_checkout)
    try:
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        # One checkout: the user's load, the choice and the notice share it (a second one
        # cost its own liveness ping and two isolation-level round trips).
        assert len(checkouts) == 1, checkouts
        assert statements == ["SELECT"] * 3, statements  # the user, choose_worker(), pg_notify()
        assert "SET" not in statements
        assert pending(url, worker_id) == before + 1
        # The notice was committed with the choice: the worker hears the page's token.
        assert select.select([listener], [], [], 5)[0], "no prefetch notice"
        listener.poll()
        assert [n.channel for n in listener.notifies] == [prefetch_channel(worker_id)]
        assert listener.notifies[0].payload in response.get_data(as_text=True)
    finally:
        listener.close()


def test_a_page_refused_after_its_checks_changes_nothing(site):
    _app, client, url, worker_id = site
    before = pending(url, worker_id)
    assert client.get("/dashboards/slow-query?seconds=soon").status_code == 400
    assert client.get("/dashboards/team?team=99999").status_code == 404
    assert pending(url, worker_id) == before
