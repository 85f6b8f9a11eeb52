"""The teams comparison's live arithmetic: the newest points computed from daily means and
counts equal the query's rolling means over the same entries."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bokeh_apps.teams import TeamDays


def rolling_as_sql(entries: list[tuple[int, int]], window: int) -> list[tuple[int, float]]:
    """What the comparison's SQL gives: per day with entries, the mean of the last `window`
    daily means (ROWS frame), days in order."""
    by_day: dict[int, list[int]] = {}
    for day, score in entries:
        by_day.setdefault(day, []).append(score)
    days = sorted(by_day)
    means = [sum(by_day[d]) / len(by_day[d]) for d in days]
    return [(d, sum(means[max(0, j - window + 1):j + 1]) / len(means[max(0, j - window + 1):j + 1]))
            for j, d in enumerate(days)]


entry = st.tuples(st.integers(0, 20), st.integers(0, 10))


@given(st.lists(entry, max_size=40), st.lists(entry, min_size=1, max_size=20), st.integers(1, 10))
def test_adding_entries_gives_the_queries_rolling_means(before, new, window):
    days = TeamDays([], [], [])
    for day, score in before:
        days.add(day, score)
    points_before = days.rolling(window, 0)
    first = min(days.add(day, score) for day, score in new)
    expected = rolling_as_sql(before + new, window)
    assert days.xs == [d for d, _ in expected]
    got = days.rolling(window, 0)
    assert got == [pytest.approx(v, rel=1e-12, abs=1e-12) for _, v in expected]
    # Points before the first changed day are unchanged, so a patch from `first` on is enough.
    if len(days.xs) == len(points_before):
        assert got[:first] == points_before[:first]


def test_an_entry_of_the_newest_day_changes_only_the_last_point():
    days = TeamDays([1.0, 2.0, 3.0], [4.0, 6.0, 8.0], [1, 1, 2])
    assert days.add(3.0, 2) == 2
    assert days.means[-1] == 6.0 and days.counts[-1] == 3
    assert days.rolling(2, 2) == [6.0]


def test_an_entry_of_a_new_day_appends_it():
    days = TeamDays([1.0], [4.0], [1])
    assert days.add(5.0, 8) == 1
    assert days.xs == [1.0, 5.0] and days.rolling(7, 0) == [4.0, 6.0]

