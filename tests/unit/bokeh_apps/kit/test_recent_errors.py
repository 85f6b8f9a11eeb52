from bokeh_apps.kit.recent_errors import MAX_CHARS, RecentErrors


def test_keeps_the_last_errors_newest_first_cut_short():
    errors = RecentErrors(keep=2)
    errors.add("a", "first", at=1.0)
    errors.add("b", "second", at=2.0)
    errors.add("c", "x" * (MAX_CHARS + 50), at=3.0)
    assert [(e["dashboard"], e["at"]) for e in errors.recent()] == [("c", 3.0), ("b", 2.0)]
    assert len(errors.recent()[0]["message"]) == MAX_CHARS
    assert errors.total == 3
