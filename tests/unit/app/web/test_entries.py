"""Logging how you feel: POST /entries (the form) and POST /api/entries (JSON), against a
real PostgreSQL. A write inserts exactly one row in one transaction; anything refused is a
4xx with a reason and writes nothing; nothing is ever a 500."""
from __future__ import annotations

import itertools
import json
import re
import secrets
import unicodedata
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from app import create_app
from app.config import Settings
from app.database import make_engine
from app.extensions import db
from app.models import User
from app.ops import prestart
from app.web import entries

PASSWORD = "entries-test-password"
_logins = itertools.count(1)
_CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def module_db(pg) -> str:
    """One fresh, migrated database for this module (like `database_url`, built once)."""
    url = pg.create_database(f"entries_{secrets.token_hex(4)}")
    prestart.migrate(url)
    return url


@pytest.fixture(scope="module")
def engine(module_db):
    """A connection of the test's own, to see what was committed."""
    eng = make_engine(module_db)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def people(engine) -> dict[str, dict]:
    """A team, two members and an admin without a team (users created as app.ops.seed does)."""
    password_hash = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")  # fast to check
    with engine.begin() as conn:
        team_id = conn.execute(text("INSERT INTO teams (name) VALUES ('Entries') RETURNING id")).scalar_one()
        made = {}
        for username, role, team in (("alice", "member", team_id), ("bob", "member", team_id),
                                     ("root", "admin", None)):
            user_id = conn.execute(
                text("INSERT INTO users (username, password_hash, role, team_id) VALUES (:u, :h, :r, :t) RETURNING id"),
                {"u": username, "h": password_hash, "r": role, "t": team}).scalar_one()
            made[username] = {"id": user_id, "team_id": team}
    return made


@pytest.fixture(scope="module")
def app(module_db, people):
    app = create_app(Settings.from_env({
        "APP_ENV": "test", "DATABASE_URL": module_db, "SECRET_KEY": secrets.token_urlsafe(32),
        "GUNICORN_THREADS": "2", "REGISTRY_TTL_SECONDS": "3600", "QUERY_PREFETCH_SECONDS": "0",
    }))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def no_entries(engine, people):
    """Every test starts without entries."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM happiness_entries"))


def login(app, username: str):
    """A test client logged in through the real form, with the page's CSRF token."""
    client = app.test_client()
    page = client.get("/login")
    token = _CSRF_INPUT.search(page.get_data(as_text=True)).group(1)
    response = client.post("/login", data={"csrf_token": token, "username": username, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    home = client.get("/")
    assert home.status_code == 200
    client.csrf = _CSRF_META.search(home.get_data(as_text=True)).group(1)  # what the pages' JavaScript sends
    return client


@pytest.fixture(scope="module")
def alice(app):
    return login(app, "alice")


@pytest.fixture(scope="module")
def root(app):
    return login(app, "root")


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, user_id, team_id, score, note, created_at FROM happiness_entries ORDER BY id"))]


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM happiness_entries")).scalar_one()


def post_api(client, body, *, token: str | None = "page", content_type: str = "application/json"):
    """POST /api/entries as the page's fetch() does; `body` is JSON-encoded unless it is str/bytes."""
    headers = {"Accept": "application/json"}
    if token == "page":
        token = client.csrf
    if token is not None:
        headers["X-CSRFToken"] = token
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/api/entries", data=data, content_type=content_type, headers=headers)


def post_form(client, data: dict, *, token: str | None = "page"):
    form = dict(data)
    if token is not None:
        form["csrf_token"] = client.csrf if token == "page" else token
    return client.post("/entries", data=form)


def assert_refused(response, engine, status: int = 400, reason: str | None = None) -> dict:
    """A JSON 4xx with a readable reason (app/web/errors.py's shape), and nothing written."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error", "reason"} and body["reason"], body
    if reason is not None:
        assert reason in body["reason"], body
    assert count(engine) == 0
    return body


# --------------------------------------------------------------------------- the form

def test_form_post_inserts_one_row_and_redirects_home_with_a_flash(alice, engine, people):
    response = post_form(alice, {"score": "8", "note": "  good day  "})
    assert response.status_code == 302 and response.headers["Location"].endswith("/")
    assert "Thanks, logged." in alice.get("/").get_data(as_text=True)
    [row] = rows(engine)
    assert (row["user_id"], row["team_id"], row["score"], row["note"]) == (
        people["alice"]["id"], people["alice"]["team_id"], 8, "good day")


@pytest.mark.parametrize("score, note, reason", [
    ("²", "", "whole number from 1 to 10"),           # "²".isdigit() is True; int("²") raised: a 500
    ("１", "", "whole number from 1 to 10"),          # fullwidth digit
    ("0", "", "whole number from 1 to 10"),
    ("11", "", "whole number from 1 to 10"),
    ("", "", "score is missing"),
    ("7", "a\x00b", "control characters"),          # PostgreSQL refused the NUL: a 500
    ("7", "x" * 501, "at most 500 characters"),
])
def test_form_post_refuses_bad_input_with_400_and_writes_nothing(alice, engine, score, note, reason):
    response = post_form(alice, {"score": score, "note": note})
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert count(engine) == 0


def test_form_post_without_csrf_token_is_400_and_writes_nothing(alice, engine):
    assert post_form(alice, {"score": "7"}, token=None).status_code == 400
    assert count(engine) == 0


def test_form_post_by_admin_without_team_is_400_with_the_reason(root, engine):
    response = post_form(root, {"score": "7"})
    assert response.status_code == 400
    assert entries.NO_TEAM_REASON in response.get_data(as_text=True)
    assert count(engine) == 0


def test_form_post_anonymous_is_sent_to_login_and_writes_nothing(app, engine):
    client = app.test_client()
    token = _CSRF_INPUT.search(client.get("/login").get_data(as_text=True)).group(1)
    response = client.post("/entries", data={"score": "7", "csrf_token": token})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert count(engine) == 0


# --------------------------------------------------------------------------- the API

def test_api_post_inserts_one_row_and_answers_201_with_the_entry(alice, engine, people):
    response = post_api(alice, {"score": 7, "note": "  shipped it\n\tfinally  "})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    [row] = rows(engine)
    assert set(body) == {"id", "score", "note", "created_at", "team_id", "user_id"}
    assert body["id"] == row["id"]
    assert body["score"] == row["score"] == 7
    assert body["note"] == row["note"] == "shipped it\n\tfinally"
    assert body["user_id"] == row["user_id"] == people["alice"]["id"]
    assert body["team_id"] == row["team_id"] == people["alice"]["team_id"]
    assert datetime.fromisoformat(body["created_at"]) == row["created_at"]


@pytest.mark.parametrize("score", [1, 10, "1", "10", "07"])
def test_api_accepts_ints_and_ascii_digit_strings_from_1_to_10(alice, engine, score):
    response = post_api(alice, {"score": score})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert [(r["score"], r["note"]) for r in rows(engine)] == [(int(score), "")]


@pytest.mark.parametrize("body, reason", [
    ({"score": "²"}, "whole number from 1 to 10"),
    ({"score": "0"}, "whole number from 1 to 10"),
    ({"score": "11"}, "whole number from 1 to 10"),
    ({"score": 0}, "whole number from 1 to 10"),
    ({"score": 11}, "whole number from 1 to 10"),
    ({"score": "7.5"}, "whole number from 1 to 10"),
    ({"score": 7.5}, "whole number from 1 to 10"),
    ({"score": 7.0}, "whole number from 1 to 10"),
    ({"score": ""}, "score is missing"),
    ({"score": True}, "whole number from 1 to 10"),   # True is an int in Python, not a score
    ({"score": None}, "score is missing"),
    ({"score": []}, "whole number from 1 to 10"),
    ({"score": "１"}, "whole number from 1 to 10"),    # fullwidth 1: int() would read it
    ({"score": " 7"}, "whole number from 1 to 10"),
    ({"score": "9" * 5000}, "whole number from 1 to 10"),  # int() of 4300+ digits raises
    ({"note": "no score"}, "score is missing"),
    ({"score": 7, "note": "a\x00b"}, "control characters"),
    ({"score": 7, "note": "bell\x07"}, "control characters"),
    ({"score": 7, "note": "c1\x85"}, "control characters"),
    ({"score": 7, "note": "\ud800"}, "lone surrogate"),
    ({"score": 7, "note": "x" * 501}, "at most 500 characters"),
    ({"score": 7, "note": 5}, "note must be text"),
    ({"score": 7, "mood": "good"}, "Unknown field(s): mood"),
    ([7, "note"], "must be a JSON object"),
    ("7", "must be a JSON object"),
    (None, "must be a JSON object"),
])
def test_api_refuses_bad_input_with_400_and_a_reason(alice, engine, body, reason):
    assert_refused(post_api(alice, body), engine, 400, reason)


def test_api_note_of_500_characters_after_strip_is_accepted(alice, engine):
    note = "  " + "y" * 500 + "  "
    assert post_api(alice, {"score": 5, "note": note}).status_code == 201
    assert [r["note"] for r in rows(engine)] == ["y" * 500]


@pytest.mark.parametrize("data, content_type, status, reason", [
    ('{"score": 7', "application/json", 400, "not valid JSON"),
    ("", "application/json", 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", "application/json", 400, "not valid JSON"),
    ('{"score": 7}', "text/plain", 415, "Content-Type: application/json"),
    ("score=7", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
])
def test_api_refuses_a_body_that_is_not_json(alice, engine, data, content_type, status, reason):
    assert_refused(post_api(alice, data, content_type=content_type), engine, status, reason)


def test_api_without_csrf_header_is_400_and_writes_nothing(alice, engine):
    assert_refused(post_api(alice, {"score": 7}, token=None), engine, 400, "CSRF token is missing")


def test_api_with_a_wrong_csrf_header_is_400_and_writes_nothing(alice, engine):
    assert_refused(post_api(alice, {"score": 7}, token="not-a-token"), engine, 400, "CSRF")


def test_api_anonymous_is_401_json_not_a_redirect(app, engine):
    client = app.test_client()
    response = client.post("/api/entries", json={"score": 7})
    assert_refused(response, engine, 401, "Log in")
    # With a valid CSRF token of an anonymous session too.
    page = client.get("/login").get_data(as_text=True)
    response = post_api(client, {"score": 7}, token=_CSRF_META.search(page).group(1))
    assert_refused(response, engine, 401, "Log in")


def test_api_admin_without_team_is_400_with_the_reason(root, engine):
    assert_refused(post_api(root, {"score": 7}), engine, 400, entries.NO_TEAM_REASON)


def test_a_refused_write_leaves_the_next_one_working(alice, engine):
    assert post_api(alice, {"score": 7, "note": "\x00"}).status_code == 400
    assert post_api(alice, {"score": "²"}).status_code == 400
    assert post_api(alice, {"score": 6, "note": "fine"}).status_code == 201
    assert [(r["score"], r["note"]) for r in rows(engine)] == [(6, "fine")]


# --------------------------------------------------------------------------- the shared insert

def test_refused_input_rolls_the_session_back(app, people):
    with app.app_context():
        user = db.session.get(User, people["alice"]["id"])       # opens a transaction
        assert db.session().in_transaction()
        with pytest.raises(entries.EntryError):
            entries.log_entry(db.session, user, score=7, note="a\x00b")
        assert not db.session().in_transaction()
        assert not (db.session.new or db.session.dirty)


def test_a_failed_insert_rolls_back_whole(app, engine, people):
    """A database error (here: a team that does not exist) leaves no row and a clean session."""
    with app.app_context():
        ghost = User(id=people["alice"]["id"], username="ghost", password_hash="!", team_id=999_999)
        with pytest.raises(Exception) as raised:
            entries.log_entry(db.session, ghost, score=7, note="")
        assert not isinstance(raised.value, entries.EntryError)
        assert not db.session().in_transaction()
        assert not (db.session.new or db.session.dirty)
    assert count(engine) == 0


# --------------------------------------------------------------------------- the pages

def test_dashboard_page_has_the_entry_form_and_csrf_meta_for_members_only(app, alice, root, engine):
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM bokeh_workers"))
        conn.execute(text("INSERT INTO bokeh_workers (host, port, pid, ready_at) VALUES ('127.0.0.1', 5999, 1, now())"))
    page = alice.get("/dashboards/my-happiness").get_data(as_text=True)
    for element in ("entry-form", "entry-score", "entry-note", "entry-submit", "entry-result"):
        assert f'id="{element}"' in page
    assert _CSRF_META.search(page) and "/api/entries" in page and "X-CSRFToken" in page
    admin_page = root.get("/dashboards/teams")
    assert admin_page.status_code == 200
    assert 'id="entry-form"' not in admin_page.get_data(as_text=True)
    assert 'id="entry-form"' in alice.get("/").get_data(as_text=True)
    assert 'id="entry-form"' not in root.get("/").get_data(as_text=True)


# --------------------------------------------------------------------------- properties

def _valid_score(value) -> int | None:
    """The rule, stated independently: an int (not a bool) or ASCII digits, from 1 to 10."""
    if type(value) is int:
        return value if 1 <= value <= 10 else None
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value) and 1 <= int(value) <= 10:
        return int(value)
    return None


def _valid_note(value) -> str | None:
    if value is None:
        return ""
    if not isinstance(value, str):
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in value):
        return None
    return value.strip() if len(value.strip()) <= 500 else None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
scores = st.one_of(
    st.integers(min_value=-3, max_value=14),
    st.integers(min_value=1, max_value=10).map(str),
    st.sampled_from(["²", "１", "٣", "7.5", "", " 7", "7 ", "07", "0010", "+7", "-1", "1e1", "٧"]),
    st.text(max_size=4),
    json_values,
)
all_characters = st.characters(exclude_categories=[])   # controls, NUL and lone surrogates too
notes = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.text(all_characters, max_size=40),
    st.text(st.sampled_from("ab \n\t\r\x00\x1f\x7f\x85\u2028é😀"), max_size=20),
    st.integers(min_value=495, max_value=505).map(lambda n: " " + "n" * n + "\n"),
    json_values,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(score=scores, note=notes, send_note=st.booleans())
def test_api_property_201_writes_exactly_that_row_and_4xx_writes_nothing(alice, engine, score, note, send_note):
    body = {"score": score, "note": note} if send_note else {"score": score}
    before = rows(engine)
    response = post_api(alice, body)
    after = rows(engine)
    assert response.status_code == 201 or 400 <= response.status_code < 500, response.get_data(as_text=True)
    expected_score, expected_note = _valid_score(score), _valid_note(note if send_note else None)
    if response.status_code == 201:
        assert len(after) == len(before) + 1
        new = after[-1]
        assert new["score"] == response.get_json()["score"] == expected_score
        assert new["note"] == response.get_json()["note"] == expected_note
        assert new["id"] == response.get_json()["id"]
    else:
        assert after == before
        assert response.get_json()["reason"]
        assert expected_score is None or expected_note is None, (score, note, response.get_json())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(score=st.one_of(st.integers(min_value=-2, max_value=13).map(str), st.text(max_size=4)),
       note=st.one_of(st.text(max_size=30), st.text(st.sampled_from("ab \n\t\x00\x1b\x7f é"), max_size=10)))
def test_form_property_redirect_writes_exactly_that_row_and_4xx_writes_nothing(alice, engine, score, note):
    before = rows(engine)
    response = post_form(alice, {"score": score, "note": note})
    after = rows(engine)
    assert response.status_code == 302 or 400 <= response.status_code < 500, response.get_data(as_text=True)
    if response.status_code == 302:
        assert len(after) == len(before) + 1
        assert (after[-1]["score"], after[-1]["note"]) == (_valid_score(score), _valid_note(note))
    else:
        assert after == before
        assert _valid_score(score) is None or _valid_note(note) is None, (score, note)
