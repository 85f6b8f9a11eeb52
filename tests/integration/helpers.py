"""Helpers the integration tests share: accounts, tokens, and what PostgreSQL is doing."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import psycopg2
from werkzeug.security import generate_password_hash

from app import tokens
from app.access import Principal

DEMO_PASSWORD = "demo"


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def principal(site, username: str) -> Principal:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, role, team_id, is_loadtest, query_limit FROM users WHERE username = %s",
                    (username,))
        uid, role, team, loadtest, limit = cur.fetchone()
    return Principal(uid, username, role, team, loadtest, limit)


def account(site, username: str, *, role: str = "lead", loadtest: bool = True, query_limit: int | None = None,
            password: str = DEMO_PASSWORD) -> Principal:
    """Create (or reset) a test account in team Platform."""
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("""
            INSERT INTO users (username, password_hash, role, team_id, is_loadtest, query_limit)
            VALUES (%s, %s, %s, (SELECT id FROM teams WHERE name = 'Platform'), %s, %s)
            ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role, is_loadtest = EXCLUDED.is_loadtest,
                query_limit = EXCLUDED.query_limit, password_hash = EXCLUDED.password_hash
        """, (username, generate_password_hash(password), role, loadtest, query_limit))
    return principal(site, username)


def mint(site, username: str, dashboard: str, worker: str, params: dict, ttl: int = 60) -> str:
    claims = tokens.SessionClaims(principal(site, username), dashboard, params, worker)
    return tokens.mint(claims, site.settings.bokeh_secret_bytes, ttl)[1]


def workers(site) -> dict[str, tuple[int, int]]:
    """name -> (port, pid) of the live registered workers."""
    return {f"w{wid}": (port, pid) for wid, port, pid in site.registered_workers()}


def wait_until(condition, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(message)


def sleeping_queries(site, worker: str) -> int:
    with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND query LIKE '%%pg_sleep%%'", (f"bokeh-{worker}",))
        return cur.fetchone()[0]


def quiet(site, timeout: float = 60.0) -> None:
    """Wait until no worker holds a session (earlier tests' closed sessions are destroyed
    after Bokeh's unused-session lifetime), so balance can be judged from zero."""
    def load() -> list[tuple[int, int, int]]:
        with psycopg2.connect(site.settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, sessions, pending FROM bokeh_workers ORDER BY id")
            return cur.fetchall()
    try:
        # Sessions only: a page opened without its autoload.js stays pending for the token's lifetime.
        wait_until(lambda: all(s == 0 for _, s, _ in load()), timeout, "")
    except AssertionError:
        raise AssertionError(f"sessions of earlier tests never went away: (id, sessions, pending) {load()}") from None


# What a worker logs when an exception escaped our code into Bokeh, Tornado or asyncio.
UNCAUGHT = ("Traceback (most recent call last)", "Uncaught exception", "Task exception was never retrieved")


def assert_clean_log(path) -> None:
    """No exception escaped into the servers' own handlers (they log it and carry on,
    which hides bugs like a document changed outside its lock)."""
    text = path.read_text(errors="replace")
    found = [marker for marker in UNCAUGHT if marker in text]
    assert not found, f"{path} has {found}; first at: {text[text.index(found[0]) - 300:][:2000]}"


def site_with_logs(pg, log_dir, **overrides: str):
    """A site of its own on the shared cluster whose logs start empty in `log_dir` (a generator
    for a pytest fixture: yields the site, then stops it)."""
    import os

    from app.config import Settings
    from app.ops import prestart
    from app.ops.launcher import Site
    from tests.conftest import site_env

    url = pg.create_database(f"{log_dir.name.replace('-', '_')}_{os.getpid()}_{int(time.time())}")
    env = site_env(url, **overrides)
    prestart.run(Settings.from_env(env), people_per_team=2, history_days=3)
    for old in log_dir.glob("*.log"):
        old.unlink()
    site = Site(env, log_dir=log_dir).start()
    try:
        yield site
    finally:
        site.stop()
