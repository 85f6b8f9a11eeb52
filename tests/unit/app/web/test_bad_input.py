"""Every form field, URL parameter, header and cookie of the Flask site, fed arbitrary text:
never a 500, always an answer with a reason; the site keeps serving. And with the database
gone, pages answer a readable 503 and recover by themselves when it is back."""
from __future__ import annotations

import re
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.config import Settings
from app.ops import prestart
from app.ops.launcher import free_port
from app.web import errors

HYPOTHESIS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(max_size=300) | st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", "\x00", "²", "１０", "-1", "0", "99999999999999999999", "0001-01-05", "9999-12-31", "2026-02-30",
     "1e308", "nan", "NaN", "inf", " 7", "7.5", "%00", "../../etc/passwd", "<script>", "' OR 1=1 --"])
DASHBOARD_PARAMS = {
    "my-happiness": ["days"], "team": ["days", "team"], "teams": ["start", "end", "window"],
    "slow-query": ["seconds", "variant"],
}


@pytest.fixture(scope="module")
def app_db(pg):
    url = pg.create_database(f"badinput_{free_port()}")
    # Hundreds of failed logins from one address here are the point, not an attack to throttle.
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48,
           "LOGIN_FAILURES_PER_ADDRESS": "100000", "LOGIN_FAILURES_PER_ACCOUNT": "10000",
           # The stand-in worker below never beats; it must outlive this module's hypothesis runs
           # (past the default 20 s TTL it is not live, and pages answer 503).
           "REGISTRY_TTL_SECONDS": "3600"}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=2)
    import psycopg2
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a worker to send pages to
        cur.execute("INSERT INTO bokeh_workers (host, port, pid, ready_at) VALUES ('127.0.0.1', 1, 1, now())")
    return create_app(Settings.from_env(env))


def logged_in(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": "demo", "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def assert_answered(response) -> None:
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_data(as_text=True)
    assert "Traceback" not in body


@pytest.fixture(scope="module")
def admin(app_db):
    return logged_in(app_db, "admin")


@pytest.fixture(scope="module")
def lead(app_db):
    return logged_in(app_db, "lead")


@HYPOTHESIS
@given(username=TEXT, password=TEXT, next_=TEXT, csrf=TEXT | st.none())
def test_login_form(app_db, username, password, next_, csrf):
    client = app_db.test_client()
    page = client.get("/login").get_data(as_text=True)
    real = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": password, "next": next_,
                                           "csrf_token": real if csrf is None else csrf})
    assert_answered(response)
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/")  # never an open redirect


@HYPOTHESIS
@given(name=st.sampled_from(sorted(DASHBOARD_PARAMS)), data=st.data())
def test_dashboard_parameters(admin, lead, name, data):
    params = {key: data.draw(TEXT, label=key) for key in data.draw(
        st.lists(st.sampled_from(DASHBOARD_PARAMS[name] + ["bogus", "bokeh-token", "lost"]), unique=True), label="keys")}
    client = admin if name != "teams" or data.draw(st.booleans(), label="as admin") else lead
    for path in (f"/dashboards/{name}", f"/dashboards/{name}/embed"):
        assert_answered(client.get(path, query_string=params))


@HYPOTHESIS
@given(name=TEXT)
def test_dashboard_names(admin, name):
    assert_answered(admin.get("/dashboards/" + name.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")))


@HYPOTHESIS
@given(header=st.sampled_from(["X-CSRFToken", "Accept", "Content-Type", "X-Forwarded-For", "X-Forwarded-Host",
                               "X-Forwarded-Proto", "Cookie", "Referer"]),
       value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200) | st.sampled_from(
           ["é", "ünïcödé-tøken", "\u2603"]),
       path=st.sampled_from(["/", "/login", "/dashboards/team", "/api/workers", "/healthz"]),
       method=st.sampled_from(["GET", "POST"]))
def test_headers(admin, header, value, path, method):
    try:
        headers = {header: value.encode("utf-8").decode("latin-1")}  # what arrives from the wire
    except UnicodeError:
        headers = {header: value}
    assert_answered(admin.open(path, method=method, headers=headers, data={"score": "5"}))


def test_non_ascii_csrf_token_is_a_400_with_a_reason(admin):
    response = admin.post("/entries", data={"score": "5", "csrf_token": "ünïcödé"})
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)


@pytest.mark.parametrize("query, reason", [
    ({"start": "2999-01-01"}, "after today"),
    ({"end": "0001-01-05"}, "between 1970-01-01"),
    ({"start": "2026-05-01", "end": "2026-01-01"}, "must not be after"),
])
def test_teams_dates_that_broke_autoload_are_refused_by_the_page(lead, query, reason):
    response = lead.get("/dashboards/teams", query_string=query)
    assert response.status_code == 400 and reason in response.get_data(as_text=True)


@pytest.mark.parametrize("lost, status", [("w1", 200), ("w99", 200), ("w0", 400), ("7", 400), ("w07", 400),
                                          ("w1 ", 400), ("w" + "9" * 11, 400), ("", 400)])
def test_embed_takes_the_lost_worker_by_name_only(admin, lost, status):
    response = admin.get("/dashboards/my-happiness/embed", query_string={"lost": lost})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status == 400:
        assert "lost must name a worker" in response.get_data(as_text=True)
    else:  # the stand-in worker is the only one: chosen even when it is the one lost
        assert response.get_json()["worker"] == "w1"


def test_the_page_itself_refuses_lost(admin):
    response = admin.get("/dashboards/my-happiness", query_string={"lost": "w1"})
    assert response.status_code == 400 and "unknown parameter(s) lost" in response.get_data(as_text=True)


def test_nul_in_the_login_username_is_a_400(app_db):
    client = app_db.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "ali\x00ce", "password": "demo", "csrf_token": token})
    assert response.status_code == 400 and "control characters" in response.get_data(as_text=True)


def test_login_starts_a_new_session(app_db):
    client = app_db.test_client()
    client.get("/login")
    with client.session_transaction() as s:
        s["planted"] = "by an attacker"
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/login", data={"username": "alice", "password": "demo", "csrf_token": token}).status_code == 302
    with client.session_transaction() as s:
        assert "planted" not in s and s.get("_user_id")


def test_with_the_database_down_pages_answer_503_and_recover_by_themselves(own_pg, monkeypatch):
    monkeypatch.setattr(errors, "RESTART_WAIT_S", 0.5)  # each page waits this long for a restart first
    url = own_pg.create_database("down")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=1)
    app = create_app(Settings.from_env(env))
    client = logged_in(app, "alice")
    assert client.get("/").status_code == 200
    own_pg.stop()
    for path in ("/", "/dashboards/team", "/login", "/api/workers"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.status_code)
        assert "database cannot be reached" in response.get_data(as_text=True)
        assert response.headers["Retry-After"]
    own_pg.start()
    assert client.get("/").status_code == 200  # no restart of the site needed


def test_a_page_load_during_a_database_restart_waits_and_loads_again(own_pg):
    url = own_pg.create_database("restart")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=1)
    app = create_app(Settings.from_env(env))
    client = logged_in(app, "alice")
    own_pg.stop()
    restart = threading.Timer(1.0, own_pg.start)
    restart.start()
    try:
        started = time.monotonic()
        response = client.get("/?from=restart")
        waited = time.monotonic() - started
    finally:
        restart.join()
    # Sent to load again once the database answered, not failed: the browser follows a 307.
    assert response.status_code == 307, response.status_code
    assert response.headers["Location"].endswith("/?from=restart")
    assert 0.9 < waited < errors.RESTART_WAIT_S + 2
    assert client.get("/?from=restart").status_code == 200
    # A write is not repeated behind the user's back: it answers 503 at once.
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    own_pg.stop()
    try:
        started = time.monotonic()
        response = client.post("/api/entries", json={"score": 5}, headers={"X-CSRFToken": token})
        assert response.status_code == 503 and time.monotonic() - started < errors.RESTART_WAIT_S
    finally:
        own_pg.start()

def test_a_page_that_lost_its_connection_to_a_restart_already_over_loads_again_at_once(own_pg):
    """PostgreSQL refuses sessions for the last moments of a restart ("starting up"); a page
    that met that and finds the database answering is sent to load again, not a 503. A
    statement's own error is not: loading again would only repeat it."""
    import psycopg2
    from sqlalchemy.exc import OperationalError

    url = own_pg.create_database("restarted")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=1)
    app = create_app(Settings.from_env(env))
    starting_up = psycopg2.OperationalError("FATAL:  the database system is starting up")
    timed_out = psycopg2.OperationalError("canceling statement due to statement timeout")

    def at_connect():
        raise OperationalError(None, None, starting_up)

    def in_a_statement():
        raise OperationalError("SELECT pg_sleep(99)", {}, timed_out)

    app.add_url_rule("/test/at-connect", "at_connect", at_connect)
    app.add_url_rule("/test/in-a-statement", "in_a_statement", in_a_statement)
    client = app.test_client()
    started = time.monotonic()
    response = client.get("/test/at-connect?x=1")
    assert response.status_code == 307 and response.headers["Location"].endswith("/test/at-connect?x=1")
    assert time.monotonic() - started < 1.0  # the database answers: no waiting for it
    assert client.get("/test/in-a-statement").status_code == 503


@pytest.fixture
def throttled_app(pg):
    url = pg.create_database(f"throttle_{free_port()}")
    env = {"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40, "BOKEH_SECRET_KEY": "y" * 48,
           "LOGIN_FAILURES_PER_ACCOUNT": "3", "LOGIN_FAILURES_PER_ADDRESS": "5"}
    prestart.run(Settings.from_env(env), people_per_team=1, history_days=1)
    return create_app(Settings.from_env(env)), url


def attempt(app, username: str, password: str, address: str) -> int:
    client = app.test_client()
    page = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address}).status_code


def test_failed_logins_are_throttled_per_account_and_per_address_across_processes(throttled_app):
    app, url = throttled_app
    assert [attempt(app, "alice", "wrong", "10.0.0.1") for _ in range(3)] == [401, 401, 401]
    # The right password no longer helps alice, from any address: the account is locked for now.
    assert attempt(app, "alice", "demo", "10.0.0.2") == 429
    assert attempt(app, "bob", "demo", "10.0.0.1") == 302  # other accounts from there are fine
    # Per address: unknown names count too, and a second app (another worker) sees the same.
    other_worker = create_app(Settings.from_env({"APP_ENV": "test", "DATABASE_URL": url, "SECRET_KEY": "x" * 40,
                                                 "BOKEH_SECRET_KEY": "y" * 48, "LOGIN_FAILURES_PER_ACCOUNT": "3",
                                                 "LOGIN_FAILURES_PER_ADDRESS": "5"}))
    assert [attempt(other_worker, f"nobody{i}", "x", "10.0.0.3") for i in range(5)] == [401] * 5
    assert attempt(app, "carol", "demo", "10.0.0.3") == 429
    client = app.test_client()
    client.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.3"})
    page = client.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.3"}).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "carol", "password": "demo", "csrf_token": token},
                           environ_base={"REMOTE_ADDR": "10.0.0.3"})
    assert int(response.headers["Retry-After"]) > 0 and "Too many failed logins" in response.get_data(as_text=True)


def test_every_response_carries_the_security_headers(admin):
    for path in ("/", "/login", "/dashboards/team", "/nope", "/healthz"):
        headers = admin.get(path).headers
        assert headers["Content-Security-Policy"] == "frame-ancestors 'self'", path
        assert headers["X-Content-Type-Options"] == "nosniff", path


def test_cookies_are_secure_outside_dev(pg):
    env = {"APP_ENV": "production", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "SECRET_KEY": "s" * 40,
           "BOKEH_SECRET_KEY": "b" * 48}
    assert create_app(Settings.from_env(env)).config["SESSION_COOKIE_SECURE"] is True
    assert create_app(Settings.from_env({**env, "APP_ENV": "dev"})).config["SESSION_COOKIE_SECURE"] is False


def test_admins_pick_a_team_and_an_unknown_team_is_a_404(admin):
    home = admin.get("/").get_data(as_text=True)
    assert 'id="team-picker"' in home and ">Platform</option>" in home and ">Design</option>" in home
    assert admin.get("/dashboards/team", query_string={"team": "999999"}).status_code == 404
    assert admin.get("/dashboards/team", query_string={"team": "1"}).status_code == 200


def test_readyz_says_whether_this_host_has_a_ready_dashboard_server(app_db):
    import psycopg2
    client = app_db.test_client()
    url = app_db.config["SETTINGS"].database_url
    assert client.get("/readyz").status_code == 200  # the fixture's ready worker on 127.0.0.1
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE bokeh_workers SET ready_at = NULL")
    try:
        response = client.get("/readyz")
        assert response.status_code == 503 and "no ready dashboard server" in response.get_json()["reason"]
    finally:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("UPDATE bokeh_workers SET ready_at = now()")


def test_a_host_that_cannot_be_read_is_a_400(admin):
    """Found by test_headers: X-Forwarded-Host '.' made werkzeug refuse the host, and the error
    page, which builds the site's URLs, then failed with a 500."""
    response = admin.get("/", headers={"X-Forwarded-Host": "."})
    assert response.status_code == 400 and "Bad Request" in response.get_data(as_text=True)
