"""Pure parts of the query service: result encoding, query keys, worker slots, the placeholder."""
from __future__ import annotations

import datetime as dt
import decimal

import pytest

from bokeh_apps.queries import rows


def test_rows_round_trip_keeps_types():
    original = [{"day": dt.date(2026, 1, 2), "at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                 "mean": 6.5, "n": 3, "team": "Data", "exact": decimal.Decimal("1.10"), "none": None}]
    back = rows.decode(rows.encode(original))
    assert back == original
    assert type(back[0]["day"]) is dt.date and type(back[0]["at"]) is dt.datetime


def test_rows_encode_empty_and_refuses_unknown_types():
    assert rows.decode(rows.encode([])) == []
    with pytest.raises(TypeError, match="cannot share"):
        rows.encode([{"x": object()}])


def test_a_dict_that_looks_like_a_tag_but_is_not_survives():
    assert rows.decode(rows.encode([{"x": "$date"}])) == [{"x": "$date"}]




def test_a_result_keeps_its_snapshot_through_encoding():
    result = rows.Result([{"a": 1}], "10:12:11")
    back = rows.decode(rows.encode(result))
    assert back == [{"a": 1}] and back.snapshot == "10:12:11"
    assert rows.decode(rows.encode([{"a": 1}])).snapshot is None
