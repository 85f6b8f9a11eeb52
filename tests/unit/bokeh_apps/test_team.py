"""The team chart's delta: new entries as patches of the days it has and a stream of new days."""
from __future__ import annotations

import datetime as dt

from bokeh_apps.queries.entries import Entry
from bokeh_apps.team import daily_delta, utc_day

UTC = dt.timezone.utc
DAY1, DAY2 = dt.datetime(2026, 11, 30, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC)


def entry(i: int, score: int, when: dt.datetime) -> Entry:
    return Entry(i, 1, 1, score, when, 100 + i)


def test_utc_day_of_an_entry_written_in_another_zone():
    assert utc_day(dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == DAY1


def test_a_day_the_chart_has_is_patched_with_the_new_mean_and_count():
    data = {"day": [DAY1, DAY2], "mean": [5.0, 6.0], "entries": [2, 3]}
    patch, stream = daily_delta(data, [entry(1, 10, DAY2 + dt.timedelta(hours=9)), entry(2, 2, DAY2 + dt.timedelta(hours=10))])
    assert patch == {"mean": [(1, (6.0 * 3 + 12) / 5)], "entries": [(1, 5)]}
    assert stream == {"day": [], "mean": [], "entries": []}


def test_a_new_day_is_streamed():
    data = {"day": [DAY1], "mean": [5.0], "entries": [2]}
    patch, stream = daily_delta(data, [entry(1, 7, DAY2 + dt.timedelta(hours=1)), entry(2, 8, DAY2 + dt.timedelta(hours=2))])
    assert patch == {} and stream == {"day": [DAY2], "mean": [7.5], "entries": [2]}
