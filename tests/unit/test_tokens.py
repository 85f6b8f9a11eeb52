"""Unit tests for app.tokens: minting and verifying the site's session tokens."""
from __future__ import annotations

import time

import pytest
from bokeh.util.token import generate_jwt_token, generate_session_id, get_token_payload

from app.access import Principal
from app.tokens import SessionClaims, TokenError, mint, verify

SECRET = b"unit-test-bokeh-secret-0123456789abcdef"
OTHER_SECRET = b"another-bokeh-secret-0123456789abcdefgh"
TTL = 120


@pytest.fixture
def claims() -> SessionClaims:
    principal = Principal(42, "alice", "lead", 7, is_loadtest=True)
    return SessionClaims(principal, "team", {"days": 30, "team": 7}, "w3")


@pytest.fixture
def token(claims) -> str:
    return mint(claims, SECRET, TTL)[1]


def test_round_trip(claims):
    session_id, token = mint(claims, SECRET, TTL)
    assert session_id.count(".") == 1  # a signed bokeh session id
    assert verify(token, SECRET) == claims
    assert verify(token, SECRET, dashboard="team", worker="w3") == claims


def test_round_trip_principal_without_team():
    claims = SessionClaims(Principal(1, "root", "admin", None), "teams", {"window": 7}, "w0")
    back = verify(mint(claims, SECRET, TTL)[1], SECRET)
    assert back == claims
    assert back.principal.team_id is None
    assert back.principal.is_loadtest is False


def test_payload_holds_claims_and_expiry(claims):
    before = int(time.time())
    session_id, token = mint(claims, SECRET, TTL)
    payload = get_token_payload(token)
    assert payload["uid"] == 42 and payload["usr"] == "alice" and payload["role"] == "lead"
    assert payload["team"] == 7 and payload["lt"] is True
    assert payload["dash"] == "team" and payload["wkr"] == "w3"
    assert payload["params"] == {"days": 30, "team": 7}
    assert before + TTL <= payload["session_expiry"] <= int(time.time()) + TTL


def test_tokens_are_unique(claims):
    assert mint(claims, SECRET, TTL) != mint(claims, SECRET, TTL)


@pytest.mark.parametrize("bad", [None, ""])
def test_missing_token(bad):
    with pytest.raises(TokenError, match="session token signed by the site is required"):
        verify(bad, SECRET)


def test_other_secret(token):
    with pytest.raises(TokenError, match="signature is not valid"):
        verify(token, OTHER_SECRET)


def _flip(ch: str) -> str:
    return "B" if ch != "B" else "C"


@pytest.mark.parametrize("position", [0, 5, 20, -3])
def test_tampered_payload(token, position):
    body, sig = token.split(".", 1)
    i = position % len(body)
    tampered = body[:i] + _flip(body[i]) + body[i + 1:] + "." + sig
    assert tampered != token
    with pytest.raises(TokenError, match="signature is not valid|malformed"):
        verify(tampered, SECRET)


def test_tampered_signature(token):
    tampered = token[:-1] + _flip(token[-1])
    with pytest.raises(TokenError, match="signature is not valid"):
        verify(tampered, SECRET)


def test_forged_claims_resigned_with_other_secret(claims):
    """Whoever lacks the secret cannot make a token, even with well-formed claims."""
    forged = generate_jwt_token(generate_session_id(secret_key=OTHER_SECRET, signed=True),
                                secret_key=OTHER_SECRET, signed=True, extra_payload=claims.to_payload())
    with pytest.raises(TokenError, match="signature is not valid"):
        verify(forged, SECRET)


def test_expired(token):
    expiry = get_token_payload(token)["session_expiry"]
    assert verify(token, SECRET, now=expiry - 1).dashboard == "team"
    for later in (expiry, expiry + 1, time.time() + TTL + 1):
        with pytest.raises(TokenError, match="expired"):
            verify(token, SECRET, now=later)


def test_other_dashboard(token):
    with pytest.raises(TokenError) as exc:
        verify(token, SECRET, dashboard="teams")
    assert str(exc.value) == "the session token is for team, not teams"


def test_other_worker(token):
    with pytest.raises(TokenError, match="for another worker"):
        verify(token, SECRET, worker="w4")


def test_bokeh_token_without_site_claims():
    plain = generate_jwt_token(generate_session_id(secret_key=SECRET, signed=True),
                               secret_key=SECRET, signed=True)
    with pytest.raises(TokenError) as exc:
        verify(plain, SECRET)
    assert str(exc.value) == "token lacks the site's claims (uid, usr, role, team, lt, dash, params, wkr)"


@pytest.mark.parametrize("extra", [
    {"uid": "42", "usr": "a", "role": "member", "team": 1, "lt": False, "dash": "team", "params": {}, "wkr": "w1"},
    {"uid": 42, "usr": "a", "role": "root", "team": 1, "lt": False, "dash": "team", "params": {}, "wkr": "w1"},
    {"uid": 42, "usr": "a", "role": "member", "team": "1", "lt": False, "dash": "team", "params": {}, "wkr": "w1"},
    {"uid": 42, "usr": "a", "role": "member", "team": 1, "lt": False, "dash": "team", "params": [], "wkr": "w1"},
])
def test_validly_signed_but_malformed_claims(extra):
    tok = generate_jwt_token(generate_session_id(secret_key=SECRET, signed=True),
                             secret_key=SECRET, signed=True, extra_payload=extra)
    with pytest.raises(TokenError, match="token claims are malformed"):
        verify(tok, SECRET)


@pytest.mark.parametrize("garbage", [
    "garbage", "a.b", "....", "!!!.???", "eyJzZXNzaW9uX2lkIjo.x", "é.ü", "\x00.\x00",
])
def test_garbage(garbage):
    with pytest.raises(TokenError, match="signature is not valid|malformed"):
        verify(garbage, SECRET)


def test_query_limit_travels_in_the_token_and_is_checked():
    claims = SessionClaims(Principal(7, "lt-1", "lead", 2, is_loadtest=True, query_limit=50), "slow-query", {}, "w1")
    back = SessionClaims.from_payload(claims.to_payload())
    assert back.principal.query_limit == 50
    for bad in (0, "50", 2.5):
        payload = {**claims.to_payload(), "lim": bad}
        with pytest.raises(TokenError, match="malformed"):
            SessionClaims.from_payload(payload)
