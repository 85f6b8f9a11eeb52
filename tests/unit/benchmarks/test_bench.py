"""Pure parts of make bench: scenario selection and the side-by-side table."""
from __future__ import annotations

import argparse

import pytest

from benchmarks import bench
from benchmarks.bench import comparison, parse_scenarios


def test_memory_runs_first_the_blocking_baseline_after_ours_and_the_peer_last_whatever_the_order_asked():
    assert parse_scenarios("fb,live") == ["b", "live", "f"]
    assert parse_scenarios("abcdef,live") == ["a", "b", "c", "live", "d", "e", "f"]
    assert parse_scenarios("dr,memory") == ["memory", "r", "d"]  # memory on fresh workers
    with pytest.raises(argparse.ArgumentTypeError):
        parse_scenarios("bz")


def result(p99, floor=None):
    return {"p99": p99, "p99_ratio": None if p99 is None else round(p99 / 5, 3), "floor_s": floor}


def test_the_comparison_shows_ours_the_peer_and_the_baseline_with_ratios_to_ours():
    lines = comparison({"a": result(5.0), "b": result(6.0), "d": result(None, floor=60.0), "e": result(8.5),
                        "f": result(21.0)})
    table = [line for line in lines if line.startswith("| (")]
    assert table[0] == ("| (a) 200 over 10 s | 5.0 s (1.0 x) | 8.5 s (1.7 x) | > 60 s (nothing charted) | 1.70 x | "
                        "> 12.00 x |")
    assert table[1] == "| (b) 200 at once | 6.0 s (1.2 x) | 21.0 s (4.2 x) | not run | 3.50 x | - |"
    assert comparison({"a": result(5.0)}) == []  # nothing to compare with


def test_the_doc_says_the_machine_was_busy_only_when_it_was():
    from benchmarks.bench import load_note

    machine = {"cores": "2"}
    assert load_note({"load": "0.3 and 0.9", "machine": machine}) == ""
    assert "above the 2 cores" in load_note({"load": "0.3 and 2.5", "machine": machine})
    assert load_note({"machine": machine}) == ""


def test_phase_seconds_sums_the_workers_bokeh_loop_phases_from_an_exposition():
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    cpu = Counter(bench.BOKEH_CPU_METRIC, "doc", ["phase"], registry=registry)
    cpu.labels("build").inc(1.5)
    cpu.labels("patch").inc(0.25)
    other = Counter("happiness_other_seconds", "doc", ["phase"], registry=registry)
    other.labels("build").inc(7)  # another metric with the same label: not counted
    assert bench.phase_seconds(generate_latest(registry).decode()) == {"build": 1.5, "pull": 0.0, "patch": 0.25}
