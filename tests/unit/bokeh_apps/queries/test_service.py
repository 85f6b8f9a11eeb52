"""Pure parts of the query service: result encoding, query keys, worker slots, the placeholder."""
from __future__ import annotations

import datetime as dt

import pytest

from bokeh_apps.queries import rows
from bokeh_apps.queries.service import Progress, QuerySpec, ordinal


def test_query_key_depends_on_sql_args_scope_and_dashboard():
    base = rows.query_key("team", "SELECT 1 WHERE t = $1", (3,), {"team_id": 3})
    assert base == rows.query_key("team", "SELECT 1\n   WHERE t = $1", (3,), {"team_id": 3})  # whitespace only
    assert base != rows.query_key("team", "SELECT 1 WHERE t = $1", (4,), {"team_id": 3})
    assert base != rows.query_key("team", "SELECT 1 WHERE t = $1", (3,), {"team_id": 4})
    assert base != rows.query_key("teams", "SELECT 1 WHERE t = $1", (3,), {"team_id": 3})
    assert base != rows.query_key("team", "SELECT 2 WHERE t = $1", (3,), {"team_id": 3})
    assert rows.query_key("x", "s", (dt.date(2026, 1, 1),), {}) != rows.query_key("x", "s", ("2026-01-01",), {})


def test_spec_key_matches_query_key():
    spec = QuerySpec("slow-query", "pg_sleep(5)", "SELECT pg_sleep($1)", (5.0,), {}, 1, 4)
    assert spec.key == rows.query_key("slow-query", "SELECT pg_sleep($1)", (5.0,), {})


@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                     (12, "12th"), (13, "13th"), (21, "21st"), (102, "102nd")])
def test_ordinal(n, text):
    assert ordinal(n) == text


def test_progress_says_where_the_query_is():
    p = Progress("pg_sleep(5)", limit=4, capacity=50)
    assert p.describe() == ("running", "Running query: pg_sleep(5), 0 s")
    changes = []
    p.on_change = lambda: changes.append(p.user_position)
    p.moved(2)
    p.moved(2)
    state, text = p.describe()
    assert state == "queued" and text.startswith("Queued: 2nd in line. You already have 4 queries running")
    assert changes == [2]
    p.moved(0)
    assert p.describe()[0] == "running" and changes == [2, 0]


class _Stops:
    """Stands for the coalescer or the user queue: records what it was asked to stop."""

    def __init__(self, holds: set[int]) -> None:
        self.holds, self.asked = holds, []

    def cancel_by_admin(self, ident: int) -> bool:
        self.asked.append(ident)
        return ident in self.holds


def test_an_admin_cancel_goes_to_the_run_or_the_ticket_it_names():
    from bokeh_apps.queries.service import QueryService
    service = QueryService.__new__(QueryService)  # the dispatch only: no pool needed
    service.coalescer, service.user_queue = _Stops({5}), _Stops({7})
    assert service.cancel_by_admin("run-5") is True
    assert service.cancel_by_admin("ticket-7") is True
    assert service.cancel_by_admin("run-6") is False
    assert service.cancel_by_admin("run-05") is False and service.cancel_by_admin("drop table") is False
    assert (service.coalescer.asked, service.user_queue.asked) == ([5, 6], [7])
