"""Unit tests for app.access: dashboard menus, parameter parsing and data scopes."""
from __future__ import annotations

import pytest

from app.access import (
    AccessDenied,
    ParamError,
    Principal,
    UnknownDashboard,
    authorize,
    dashboards_for,
    parse_params,
)

MEMBER = Principal(10, "mia", "member", 3)
LEAD = Principal(20, "leo", "lead", 3)
ADMIN = Principal(30, "ada", "admin", None)
LOADTESTER = Principal(40, "lt", "member", 5, is_loadtest=True)
TEAMLESS = Principal(50, "solo", "member", None)


def names(principal: Principal) -> list[str]:
    return [d.name for d in dashboards_for(principal)]


@pytest.mark.parametrize("principal, expected", [
    (MEMBER, ["my-happiness", "team"]),
    (LEAD, ["my-happiness", "team", "teams"]),
    (ADMIN, ["my-happiness", "team", "teams", "slow-query"]),
    (LOADTESTER, ["my-happiness", "team", "slow-query"]),
    (TEAMLESS, ["my-happiness"]),
])
def test_dashboards_for(principal, expected):
    assert names(principal) == expected


def test_unknown_role_is_denied():
    with pytest.raises(AccessDenied, match="unknown role 'root'"):
        Principal(1, "x", "root", None)


# --- parse_params -----------------------------------------------------------------------

@pytest.mark.parametrize("name, args, bad", [
    ("my-happiness", {"team": "1"}, "team"),
    ("team", {"window": "7"}, "window"),
    ("teams", {"days": "7"}, "days"),
    ("slow-query", {"sleep": "1"}, "sleep"),
])
def test_unknown_param(name, args, bad):
    with pytest.raises(ParamError) as exc:
        parse_params(name, args)
    assert exc.value.status == 400
    assert f"unknown parameter(s) {bad} for {name}" in str(exc.value)


def test_unknown_params_listed_sorted_with_allowed():
    with pytest.raises(ParamError) as exc:
        parse_params("team", {"zeta": "1", "alpha": "2", "days": "3"})
    assert str(exc.value) == "unknown parameter(s) alpha, zeta for team; allowed: days, team"


@pytest.mark.parametrize("args, expected", [
    ({}, {"days": 365}),
    ({"days": ""}, {"days": 365}),
    ({"days": "1"}, {"days": 1}),
    ({"days": "3650"}, {"days": 3650}),
])
def test_days(args, expected):
    assert parse_params("my-happiness", args) == expected


@pytest.mark.parametrize("board, name, raw, message", [
    ("my-happiness", "days", "0", "'days' must be between 1 and 3650, got 0"),
    ("my-happiness", "days", "3651", "'days' must be between 1 and 3650, got 3651"),
    ("my-happiness", "days", "-1", "'days' must be between 1 and 3650, got -1"),
    ("my-happiness", "days", "ten", "'days' must be a whole number, got 'ten'"),
    ("my-happiness", "days", "1.5", "'days' must be a whole number, got '1.5'"),
    ("teams", "window", "0", "'window' must be between 1 and 90, got 0"),
    ("teams", "window", "91", "'window' must be between 1 and 90, got 91"),
    ("teams", "window", "week", "'window' must be a whole number, got 'week'"),
])
def test_integer_bounds(board, name, raw, message):
    with pytest.raises(ParamError) as exc:
        parse_params(board, {name: raw})
    assert str(exc.value) == message


def test_team_params():
    assert parse_params("team", {}) == {"days": 365, "team": None}
    assert parse_params("team", {"team": "12", "days": "30"}) == {"days": 30, "team": 12}


@pytest.mark.parametrize("raw", ["abc", "1.0", "0", "-3", str(2**31)])
def test_team_must_be_positive_int(raw):
    with pytest.raises(ParamError, match="^'team' must be"):
        parse_params("team", {"team": raw})


def test_teams_defaults_and_dates():
    assert parse_params("teams", {}) == {"start": None, "end": None, "window": 7}
    assert parse_params("teams", {"start": "2025-01-31", "end": "2025-01-31", "window": "90"}) == {
        "start": "2025-01-31", "end": "2025-01-31", "window": 90}


@pytest.mark.parametrize("name, raw", [("start", "yesterday"), ("end", "2025-13-01"),
                                       ("start", "2025-02-30"), ("end", "31/01/2025")])
def test_teams_dates_must_be_iso(name, raw):
    with pytest.raises(ParamError) as exc:
        parse_params("teams", {name: raw})
    assert str(exc.value) == f"'{name}' must be a date like 2026-01-31, got {raw!r}"


def test_teams_start_after_end():
    with pytest.raises(ParamError, match="'start' must not be after 'end'"):
        parse_params("teams", {"start": "2025-02-01", "end": "2025-01-31"})




@pytest.mark.parametrize("args, seconds", [
    ({}, 5.0),
    ({"seconds": ""}, 5.0),
    ({"seconds": "0"}, 0.0),
    ({"seconds": "2.5"}, 2.5),
    ({"seconds": "60"}, 60.0),
    ({"seconds": "-5"}, 0.0),
    ({"seconds": "999"}, 60.0),
    ({"seconds": "inf"}, 60.0),
    ({"seconds": "-inf"}, 0.0),
])
def test_slow_query_seconds_clamped(args, seconds):
    assert parse_params("slow-query", args) == {"seconds": seconds, "variant": 0}


@pytest.mark.parametrize("raw, error", [("-1", "between 0 and"), ("x", "whole number"), ("1e3", "whole number"),
                                        (str(10**9 + 1), "between 0 and")])
def test_slow_query_variant_is_a_bounded_whole_number(raw, error):
    with pytest.raises(ParamError, match=error):
        parse_params("slow-query", {"variant": raw})
    assert parse_params("slow-query", {"variant": "17", "seconds": "1"}) == {"seconds": 1.0, "variant": 17}


def test_the_blocking_baseline_is_unlisted_but_authorized_like_slow_query():
    assert "slow-query-blocking" not in [d.name for d in dashboards_for(ADMIN)]
    assert authorize(ADMIN, "slow-query-blocking", {"seconds": 1.0}) == {}
    assert authorize(LOADTESTER, "slow-query-blocking", {"seconds": 1.0}) == {}
    with pytest.raises(AccessDenied):
        authorize(MEMBER, "slow-query-blocking", {"seconds": 1.0})


@pytest.mark.parametrize("limit", [0, -1, "4", 2.5])
def test_a_principal_query_limit_must_be_a_positive_whole_number(limit):
    with pytest.raises(AccessDenied, match="invalid query limit"):
        Principal(1, "x", "member", 1, query_limit=limit)


@pytest.mark.parametrize("raw", ["nan", "NaN", "soon", "1,5"])
def test_slow_query_seconds_must_be_a_number(raw):
    with pytest.raises(ParamError, match="^'seconds' must be a number"):
        parse_params("slow-query", {"seconds": raw})


@pytest.mark.parametrize("call", [
    lambda: parse_params("nope", {}),
    lambda: authorize(ADMIN, "nope", {}),
])
def test_unknown_dashboard(call):
    with pytest.raises(UnknownDashboard) as exc:
        call()
    assert exc.value.status == 404
    assert str(exc.value) == "there is no dashboard called 'nope'"


# --- authorize --------------------------------------------------------------------------

@pytest.mark.parametrize("principal", [MEMBER, LEAD, ADMIN, LOADTESTER, TEAMLESS])
def test_my_happiness_is_always_own_user(principal):
    assert authorize(principal, "my-happiness", {"days": 30}) == {"user_id": principal.user_id}


@pytest.mark.parametrize("principal", [MEMBER, LEAD])
@pytest.mark.parametrize("team", [None, 3])
def test_team_member_and_lead_get_own_team(principal, team):
    assert authorize(principal, "team", {"days": 30, "team": team}) == {"team_id": 3}


@pytest.mark.parametrize("principal", [MEMBER, LEAD])
def test_team_other_team_denied(principal):
    with pytest.raises(AccessDenied, match="only see your own team") as exc:
        authorize(principal, "team", parse_params("team", {"team": "4"}))
    assert exc.value.status == 403


def test_team_without_team_denied():
    with pytest.raises(AccessDenied) as exc:
        authorize(TEAMLESS, "team", {"team": None})
    assert exc.value.status == 403


def test_team_admin_must_choose():
    with pytest.raises(ParamError, match=r"admins choose a team") as exc:
        authorize(ADMIN, "team", parse_params("team", {}))
    assert exc.value.status == 400


def test_team_admin_gets_named_team():
    assert authorize(ADMIN, "team", parse_params("team", {"team": "9"})) == {"team_id": 9}


def test_teams_member_denied():
    with pytest.raises(AccessDenied) as exc:
        authorize(MEMBER, "teams", parse_params("teams", {}))
    assert exc.value.status == 403
    assert str(exc.value) == "your role (member) may not open teams"


@pytest.mark.parametrize("principal", [LEAD, ADMIN])
def test_teams_lead_and_admin_see_all(principal):
    assert authorize(principal, "teams", parse_params("teams", {})) == {"all_teams": True}


@pytest.mark.parametrize("principal", [MEMBER, LEAD])
def test_slow_query_plain_users_denied(principal):
    with pytest.raises(AccessDenied) as exc:
        authorize(principal, "slow-query", {"seconds": 1.0})
    assert exc.value.status == 403


@pytest.mark.parametrize("principal", [ADMIN, LOADTESTER])
def test_slow_query_admin_and_loadtester_allowed(principal):
    assert authorize(principal, "slow-query", {"seconds": 1.0}) == {}
