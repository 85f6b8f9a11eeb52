"""The scenarios in their own modules: their names in `make bench --scenarios`, and their sections of
docs/benchmarks.md kept at the page's end whatever bench.py rewrites."""
from __future__ import annotations

import argparse

import pytest

from benchmarks import bench, extras
from benchmarks.browser import HEADING as BROWSER
from benchmarks.memory import HEADING as MEMORY

MAIN = "# Benchmarks\n\nthe a-d table\n"
LIVE = bench.LIVE_HEADING + "\n\nlive numbers\n"


def test_scenario_names_parse_alongside_the_others():
    assert bench.parse_scenarios("ab,live,browser,memory") == ["a", "b", "live", "browser", "memory"]
    assert bench.parse_scenarios("memory") == ["memory"]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_scenarios("browsers")


def test_split_sections_takes_a_section_up_to_the_next_heading():
    text = MAIN + "\n" + BROWSER + "\n\nold browser\n\n" + LIVE
    rest, found = extras.split_sections(text, (BROWSER, MEMORY))
    assert found == {BROWSER: BROWSER + "\n\nold browser\n"}
    assert "old browser" not in rest and "live numbers" in rest and "the a-d table" in rest


def test_fresh_sections_replace_old_ones_and_others_are_kept_at_the_end():
    old = MAIN + "\n" + LIVE + "\n" + BROWSER + "\n\nold browser\n\n" + MEMORY + "\n\nold memory\n"
    # bench.py's merge_doc keeps everything after the live heading as "live": ours with it.
    new = bench.merge_doc(old, None, None)
    merged = extras.merge_sections(new, old, {"memory": MEMORY + "\n\nnew memory\n"})
    assert merged == MAIN + "\n" + LIVE + "\n" + BROWSER + "\n\nold browser\n\n" + MEMORY + "\n\nnew memory\n"


def test_a_new_live_section_does_not_lose_ours():
    old = MAIN + "\n" + LIVE + "\n" + MEMORY + "\n\nold memory\n"
    new_live = bench.LIVE_HEADING + "\n\nnew live\n"
    merged = extras.merge_sections(bench.merge_doc(old, None, new_live), old, {"browser": BROWSER + "\n\nb\n"})
    assert merged == MAIN + "\n" + new_live + "\n" + BROWSER + "\n\nb\n\n" + MEMORY + "\n\nold memory\n"
    assert merged.count(bench.LIVE_HEADING) == 1


def test_an_empty_page_gets_just_the_sections_made():
    merged = extras.merge_sections(bench.merge_doc("", "# Benchmarks\n", None), "", {"memory": MEMORY + "\n\nm\n"})
    assert merged == "# Benchmarks\n\n" + MEMORY + "\n\nm\n"


def test_a_scenario_without_the_database_stops_with_a_reason():
    with pytest.raises(SystemExit, match="DATABASE_URL"):
        extras.run("memory", "http://127.0.0.1:1", "", "pw")
