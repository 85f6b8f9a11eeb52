"""Unit tests for the fault drill's numbers: percentiles, verdicts, windows (benchmarks/drill.py)."""
from __future__ import annotations

import os
import shutil

from benchmarks.drill import TARGET_RECOVERY_P99_S, AppHost, Window, merge_doc, nearest_rank, targets_cell, verdict


def test_percentiles_are_numpys_nearest_rank():
    assert nearest_rank([], 50) is None
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert nearest_rank([float(i) for i in range(1, 101)], 99) == 99.0
    assert nearest_rank([0.5, 9.0], 99) == 9.0


def row(**over):
    base = {"page_loads": {"failed": 0}, "charts": {"lost": 0}, "updates": {"lost": 0},
            "recovery_from_fault_s": {"p99": 1.0}, "error": None}
    return {**base, **over}


def test_the_verdict_names_each_missed_target():
    assert verdict(row()) == []
    missed = verdict(row(page_loads={"failed": 3}, charts={"lost": 1}, updates={"lost": 2},
                         recovery_from_fault_s={"p99": TARGET_RECOVERY_P99_S + 0.01}, error="boom"))
    assert len(missed) == 5
    assert verdict(row(recovery_from_fault_s={"p99": None})) == []


def test_a_window_holds_its_start_not_its_end():
    w = Window("kill", 10.0, 20.0)
    assert w.holds(10.0) and w.holds(19.99) and not w.holds(20.0) and not w.holds(9.99)


def test_a_new_run_replaces_the_generated_page_and_keeps_the_findings():
    old = "# Reliability\n\nold table\n\n## Findings\n\nWhy the rolling restart missed.\n"
    new = merge_doc(old, "# Reliability\n\nnew table\n")
    assert new == "# Reliability\n\nnew table\n\n## Findings\n\nWhy the rolling restart missed.\n"
    assert merge_doc("", "# R\n") == "# R\n"


def test_the_targets_cell_says_met_missed_or_why_the_fault_did_not_run():
    assert targets_cell(row()) == "met"
    assert targets_cell(row(charts={"lost": 2})) == "missed: charts lost"
    assert targets_cell(row(not_run="network namespaces need root")) == "not run: network namespaces need root"


def test_without_root_or_ip_the_host_faults_say_why_they_cannot_run(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert AppHost.missing() == "network namespaces need root"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert AppHost.missing() == "no `ip` (iproute2)"
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    assert AppHost.missing() is None
