"""/admin on a real database, through Flask's test client: who may see it, what the state
says, and the cancel's validation and NOTIFY."""
from __future__ import annotations

import re
import select

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.channels import QUERY_CANCEL_CHANNEL
from app.config import Settings
from app.ops import prestart
from app.ops.launcher import free_port

HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def app_db(pg):
    url = pg.create_database(f"admin_{free_port()}")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=2)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        # A worker that reported figures, a run it leads for alice, and a ticket of hers in line.
        cur.execute("""INSERT INTO bokeh_workers (id, host, port, pid, ready_at, stats)
                       VALUES (41, '10.1.0.7', 5006, 4242, now(), '{"queries_running": 1, "dashboards": {"team": 2},
                       "errors": [{"at": 1.0, "dashboard": "team", "message": "The query failed"}]}')""")
        cur.execute("SELECT id FROM users WHERE username = 'alice'")
        alice = cur.fetchone()[0]
        cur.execute("INSERT INTO query_runs (key, run_id, worker_id) VALUES ('k-slow', 9001, 41)")
        cur.execute("""INSERT INTO query_tickets (id, user_id, worker_id, nonce, dashboard, label, query_key, query_limit,
                       cache_ttl) VALUES (501, %s, 41, 1, 'slow-query', 'pg_sleep(5)', 'k-slow', 1, 0),
                                         (502, %s, 41, 2, 'slow-query', 'pg_sleep(6)', 'k-other', 1, 0)""",
                    (alice, alice))
    app = create_app(Settings.from_env(env))
    app.config["DATABASE_URL"] = url
    return app


def logged_in(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": "demo", "csrf_token": token})
    assert response.status_code == 302
    return client


def csrf_of(client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/admin").get_data(as_text=True)).group(1)


@pytest.fixture(scope="module")
def admin(app_db):
    return logged_in(app_db, "admin")


@pytest.mark.parametrize("username", ["alice", "lead"])
def test_members_and_leads_get_403_everywhere(app_db, username):
    client = logged_in(app_db, username)
    assert client.get("/admin").status_code == 403
    assert client.get("/admin/state").status_code == 403
    assert client.post("/admin/queries/run-9001/cancel").status_code == 403
    assert "Admin console" not in client.get("/").get_data(as_text=True)


def test_anonymous_visitors_are_sent_to_log_in(app_db):
    client = app_db.test_client()
    for response in (client.get("/admin"), client.get("/admin/state"), client.post("/admin/queries/run-1/cancel")):
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_admin_sees_workers_queries_sessions_and_errors(admin):
    assert "Admin console" in admin.get("/").get_data(as_text=True)
    assert admin.get("/admin").status_code == 200
    state = admin.get("/admin/state").get_json()
    (worker,) = state["workers"]
    assert (worker["worker"], worker["host"], worker["pid"], worker["queries_running"]) == ("w41", "10.1.0.7", 4242, 1)
    assert [(q["id"], q["state"], q["users"], q["sessions"]) for q in state["queries"]] == [
        ("run-9001", "running", ["alice"], 1), ("ticket-502", "queued", ["alice"], 1)]
    assert state["dashboards"] == {"team": 2}
    assert [(e["worker"], e["message"]) for e in state["errors"]] == [("w41", "The query failed")]


def test_a_cancel_without_the_csrf_token_is_refused(admin):
    assert admin.post("/admin/queries/run-9001/cancel").status_code == 400


def test_a_cancel_notifies_every_worker(app_db, admin):
    listener = psycopg2.connect(app_db.config["DATABASE_URL"])
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute(f"LISTEN {QUERY_CANCEL_CHANNEL}")
    try:
        for ref in ("run-9001", "ticket-502"):
            response = admin.post(f"/admin/queries/{ref}/cancel", headers={"X-CSRFToken": csrf_of(admin)})
            assert response.status_code == 202 and response.get_json() == {"cancelling": ref}
            assert select.select([listener], [], [], 5) != ([], [], [])
            listener.poll()
            assert [n.payload for n in listener.notifies] == [ref]
            listener.notifies.clear()
    finally:
        listener.close()


@HYPOTHESIS
@given(ref=st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s)
       | st.sampled_from(["run-0", "run-01", "run-9002", "ticket-9001", "ticket-1", "run-99999999999999999999"]))
def test_anything_but_a_query_in_flight_is_a_404(admin, ref):
    response = admin.post(f"/admin/queries/{ref}/cancel", headers={"X-CSRFToken": csrf_of(admin),
                                                                      "Accept": "application/json"})
    if ref in ("run-9001", "ticket-501", "ticket-502"):
        assert response.status_code == 202
    else:
        assert response.status_code == 404, (ref, response.status_code)
        assert response.get_json()["reason"]
