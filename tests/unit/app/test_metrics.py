"""app.metrics: names and labels, the multiprocess directory (emptied, summed, dead gauges
forgotten) with real processes writing real files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import metrics

ROOT = Path(__file__).resolve().parents[3]

COLLECTORS = [v for v in vars(metrics).values() if hasattr(v, "_labelnames") and hasattr(v, "_name")]


def test_every_metric_is_named_with_its_unit_and_has_bounded_labels():
    assert len(COLLECTORS) == 16
    for c in COLLECTORS:
        assert c._name.startswith("happiness_"), c._name
        assert c._labelnames, f"{c._name} has no labels: every process would write zeros for it"
        assert not {"user", "user_id", "sql", "path", "username"} & set(c._labelnames), c._name
        if c._type == "counter":
            assert not c._name.endswith("_total")  # prometheus-client adds it on output
        if c._type == "histogram":
            assert c._name.endswith("_seconds"), c._name
        if c._type == "gauge":
            assert c._multiprocess_mode == "livesum", c._name


def _in_process(directory: Path, code: str) -> int:
    """Run `code` in a fresh interpreter writing to `directory`; return its pid."""
    script = f"import os\nfrom app import metrics\n{code}\nprint(os.getpid())"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, metrics.MULTIPROC_ENV: str(directory)})
    return int(out.stdout.split()[-1])


def _samples(directory: Path) -> dict[tuple[str, tuple], float]:
    body, content_type = metrics.exposition(directory)
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_the_exposition_sums_every_process_and_forgets_a_dead_ones_gauges(tmp_path):
    code = ('metrics.SESSIONS_CREATED.labels("w1", "team").inc(2)\n'
            'metrics.SESSIONS_OPEN.labels("w1", "team").set(3)\n'
            'metrics.QUERY_SECONDS.labels("team", "ok").observe(0.3)')
    first = _in_process(tmp_path, code)
    _in_process(tmp_path, code)
    samples = _samples(tmp_path)
    created = ("happiness_sessions_created_total", (("dashboard", "team"), ("worker", "w1")))
    open_ = ("happiness_sessions_open", (("dashboard", "team"), ("worker", "w1")))
    assert samples[created] == 4
    assert samples[open_] == 6
    assert samples[("happiness_query_duration_seconds_count", (("dashboard", "team"), ("outcome", "ok")))] == 2
    assert samples[("happiness_query_duration_seconds_bucket",
                    (("dashboard", "team"), ("le", "0.5"), ("outcome", "ok")))] == 2

    metrics.forget_process(first, tmp_path)  # as gunicorn's child_exit does
    samples = _samples(tmp_path)
    assert samples[open_] == 3  # only the live process's gauge
    assert samples[created] == 4  # a dead process's counts stay


def test_reset_directory_creates_it_and_removes_only_old_metric_files(tmp_path):
    directory = tmp_path / "a" / "metrics"
    assert metrics.reset_directory(directory) == directory and directory.is_dir()
    _in_process(directory, 'metrics.SESSIONS_CREATED.labels("w1", "team").inc()')
    (directory / "notes.txt").write_text("kept")
    assert list(directory.glob("*.db"))
    metrics.reset_directory(directory)
    assert not list(directory.glob("*.db"))
    assert (directory / "notes.txt").read_text() == "kept"
    assert _samples(directory) == {}


@pytest.mark.parametrize("listen", ["9108", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:0", "127.0.0.1:70000", ""])
def test_serve_refuses_an_address_without_a_port(listen):
    with pytest.raises(ValueError, match="127.0.0.1:9108"):
        metrics.serve(listen)


def test_the_grafana_dashboard_shows_every_metric_and_only_metrics_that_exist():
    import json
    import re

    board = json.loads((ROOT / "docker" / "grafana" / "happiness.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"\bhappiness_\w+", e)}
    exported = set()
    for c in COLLECTORS:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}[c._type]
        exported |= {c._name + s for s in suffixes}
    assert used <= exported, used - exported
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", u) for u in used}
    assert {c._name for c in COLLECTORS} - shown == set()
    for e in exprs:  # counters and histograms are read as rates, never raw
        assert ("_total" not in e and "_bucket" not in e and "_count" not in e) or "rate(" in e or "increase(" in e, e
    assert all("histogram_quantile(" in e for e in exprs if "_bucket" in e)
