"""Which sessions may see an entry: the queries' access rule, applied to one row."""
from __future__ import annotations

import datetime as dt

import pytest

from bokeh_apps.queries.entries import Entry, visible_to

ENTRY = Entry(id=1, user_id=7, team_id=3, score=4, created_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc), txid=9)


@pytest.mark.parametrize("scope, sees", [
    ({"user_id": 7}, True), ({"user_id": 8}, False),
    ({"team_id": 3}, True), ({"team_id": 4}, False),
    ({"all_teams": True}, True), ({}, False),
])
def test_scope_decides(scope, sees):
    assert visible_to(scope, ENTRY) is sees
