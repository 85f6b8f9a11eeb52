"""What a load run measured: a JSON-able summary, a text summary, and a self-contained HTML report.

Percentiles are nearest-rank (numpy's "inverted_cdf"): the p-th percentile of n sorted values
is the value at rank ceil(p / 100 * n), so it is always one of the measured times (p50 of
1, 2, 3, 4 is 2).
"""
from __future__ import annotations

import html
import json
import math
import statistics
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from app.loadtest.runner import LoadRun

PERCENTILES = (50, 90, 99)
PHASES = ("page_s", "autoload_s", "connect_s", "chart_s")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (0 < p <= 100) of `values` (numpy's "inverted_cdf" method);
    None when there are none."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not len(values):
        return None
    # The quantile, not np.percentile(values, p): that divides by 100 itself, and 99.9 / 100
    # is 0.9990000000000001, so p99.9 of 1..1000 came out 1000, not 999. Rounded to 12
    # digits, n x q lands on the exact rank (checked for n up to 2000 against ceil(p n / 100)).
    return float(np.quantile(values, round(p / 100, 12), method="inverted_cdf"))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summarize(run: LoadRun) -> dict[str, Any]:
    """The run as plain data: config, counts, errors by kind, time-to-chart, phases, workers, records."""
    records = run.records
    ok = [r for r in records if r.ok]
    times = [r.elapsed_s for r in ok]
    errors: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.error:
            entry = errors.setdefault(r.error, {"count": 0, "sample": r.message})
            entry["count"] += 1
    config = asdict(run.config)
    config.pop("password")
    config["params"] = dict(run.config.params)
    config["active_users"] = run.config.active_users
    # A failed session counts against the worker it reached, if any.
    workers = Counter(r.worker or r.page_worker for r in records if r.worker or r.page_worker)
    return {
        "config": config,
        "started_at": run.started_at.isoformat(),
        "duration_s": _round(run.duration_s),
        "login_s": _round(run.login_s),
        "counts": {"sessions": len(records), "ok": len(ok), "errors": len(records) - len(ok)},
        "errors": dict(sorted(errors.items())),
        "time_to_chart": {
            "percentile_method": "nearest-rank",
            **{f"p{p}": _round(percentile(times, p)) for p in PERCENTILES},
            "max": _round(max(times, default=None)),
            "mean": _round(statistics.fmean(times)) if times else None,
        },
        "phase_medians": {name.removesuffix("_s"): _round(statistics.median([getattr(r, name) for r in ok]))
                          if ok else None for name in PHASES},
        "workers": dict(sorted(workers.items())),
        "sessions": [{k: _round(v) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in records],
    }


def write_json(summary: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(summary, indent=2) + "\n")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def format_text(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    c, t, cfg = summary["counts"], summary["time_to_chart"], summary["config"]
    lines = [f"{cfg['dashboard']} at {cfg['url']}: {c['sessions']} sessions, {c['ok']} charts, "
             f"{c['errors']} errors in {summary['duration_s']:.1f} s ({cfg['active_users']} users)",
             "time to chart: " + ", ".join(f"{k} {_seconds(t[k])}" for k in ("p50", "p90", "p99", "max"))]
    for kind, e in summary["errors"].items():
        lines.append(f"error {kind}: {e['count']} (e.g. {e['sample'][:120]})")
    if summary["workers"]:
        lines.append("sessions per worker: " + ", ".join(f"{w} {n}" for w, n in summary["workers"].items()))
    return "\n".join(lines)


def _table(summary: dict[str, Any]) -> str:
    c, t, ph = summary["counts"], summary["time_to_chart"], summary["phase_medians"]
    rows = [("started", summary["started_at"]), ("duration", _seconds(summary["duration_s"])),
            ("sessions / charts / errors", f"{c['sessions']} / {c['ok']} / {c['errors']}"),
            *((f"time to chart {k}", _seconds(t[k])) for k in ("p50", "p90", "p99", "max", "mean")),
            *((f"median {name}", _seconds(v)) for name, v in ph.items()),
            *((f"error {kind}", f"{e['count']}: {e['sample']}") for kind, e in summary["errors"].items())]
    cfg = ", ".join(f"{k}={v}" for k, v in summary["config"].items())
    body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<p>{html.escape(cfg)}</p><table>{body}</table><p>Percentiles: nearest-rank, of charted sessions.</p>"


def write_html(summary: dict[str, Any], path: str | Path) -> None:
    """A self-contained page (BokehJS inline, like bokeh.resources.INLINE): histogram,
    time to chart by start time, sessions per worker."""
    # Imported here: the plotting stack is only needed for this report.
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, Div, HoverTool
    from bokeh.plotting import figure
    from bokeh.resources import Resources

    class BokehOnly(Resources):
        """INLINE without other libraries' external files. Once Panel is imported (the teams
        dashboard needs it), Bokeh links every registered model's __javascript__/__css__ into
        every page, which would make the report depend on files next to it."""

        def _collect_external_resources(self, resource_attr: Any) -> list[str]:
            return []

        def clone(self, *, components: Any = None) -> Resources:  # Resources.clone drops the subclass
            return BokehOnly(mode="inline", components=list(self.components) if components is None else components)

    sessions = summary["sessions"]
    times = [s["elapsed_s"] for s in sessions if s["ok"]]
    hist = figure(title="Time to chart (histogram)", x_axis_label="seconds", y_axis_label="sessions",
                  height=300, sizing_mode="stretch_width", tools="save,reset")
    if times:
        counts, edges = np.histogram(times, bins=min(40, max(5, int(math.sqrt(len(times))))))
        hist.quad(top=counts, bottom=0, left=edges[:-1], right=edges[1:], fill_color="#4c78a8", line_color="white")

    scatter = figure(title="Time to chart by start time", x_axis_label="session start (s after run start)",
                     y_axis_label="seconds to chart (errors: to failure)", height=300,
                     sizing_mode="stretch_width", tools="pan,box_zoom,reset,save")
    columns = ("start_s", "elapsed_s", "user", "worker", "error")
    for ok, color, label, marker, size in ((True, "#4c78a8", "charted", "circle", 6), (False, "#e45756", "error", "x", 9)):
        rows = [s for s in sessions if s["ok"] is ok and s["elapsed_s"] is not None]
        if rows:
            source = ColumnDataSource({k: [r[k] for r in rows] for k in columns})
            scatter.scatter("start_s", "elapsed_s", source=source, color=color, legend_label=label, size=size,
                            marker=marker)
    scatter.legend.location = "top_left"
    scatter.add_tools(HoverTool(tooltips=[("user", "@user"), ("worker", "@worker"), ("error", "@error"),
                                          ("seconds", "@elapsed_s")]))

    names = list(summary["workers"])
    bars = figure(title="Sessions per worker", x_range=names or ["none"], y_axis_label="sessions",
                  height=300, sizing_mode="stretch_width", tools="save")
    bars.vbar(x=names, top=list(summary["workers"].values()), width=0.7, fill_color="#54a24b")

    cfg = summary["config"]
    title = f"Load test: {cfg['dashboard']}, {summary['counts']['sessions']} sessions"
    layout = column(Div(text=f"<h2>{html.escape(title)}</h2>{_table(summary)}"), hist, scatter, bars,
                    sizing_mode="stretch_width")
    Path(path).write_text(file_html(layout, BokehOnly(mode="inline"), title))
