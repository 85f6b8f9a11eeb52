"""Snapshot visibility, checked against PostgreSQL's own pg_visible_in_snapshot."""
from __future__ import annotations

import psycopg2
import pytest

from bokeh_apps.queries.snapshot import Snapshot


def test_parse_and_print_round_trip():
    snap = Snapshot.parse("100:110:102,105")
    assert (snap.xmin, snap.xmax, snap.in_progress) == (100, 110, frozenset({102, 105}))
    assert str(snap) == "100:110:102,105" and str(Snapshot.parse("7:7:")) == "7:7:"


@pytest.mark.parametrize("txid, visible", [(99, True), (100, True), (101, True), (102, False), (105, False),
                                           (109, True), (110, False), (500, False)])
def test_visibility_rule(txid, visible):
    assert Snapshot.parse("100:110:102,105").visible(txid) is visible


def test_the_rule_matches_postgresql(database_url):
    cases = [("100:110:102,105", x) for x in (99, 100, 102, 104, 105, 109, 110, 111)] + [("5:5:", 4), ("5:5:", 5)]
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for snap, txid in cases:
            cur.execute("SELECT pg_visible_in_snapshot(%s::text::xid8, %s::pg_snapshot)", (str(txid), snap))
            assert cur.fetchone()[0] is Snapshot.parse(snap).visible(txid), (snap, txid)
