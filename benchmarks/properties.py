"""CPU per document of building it and of ``Document.to_json()`` (PULL-DOC), stock Bokeh vs
bokeh_apps.speedups.properties installed.

    .venv/bin/python -m benchmarks.properties [--rounds 15] [--ablation]

Stock and patched rounds alternate, so that load from other processes hits both alike; the
figure per configuration is the best round's mean (the least disturbed). --ablation also
measures "all patches but one", the saving each patch adds on top of the others.
Writes build/bench/properties.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Callable

import bokeh
import panel as pn
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Button, Div, HoverTool
from bokeh.plotting import figure

from bokeh_apps.slow_query import chart
from bokeh_apps.speedups import properties

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "properties.json"


def slow_query_doc() -> Document:
    """What slow-query sends: its chart under a status row (add_dashboard needs a session)."""
    doc = Document()
    _, plot = chart(5)
    doc.add_root(column(row(Div(text="Running…"), Button(label="Cancel")), plot, sizing_mode="stretch_width"))
    return doc


def figure_doc() -> Document:
    """A bokeh.plotting figure with a legend and a HoverTool, in a column/row layout."""
    doc = Document()
    fig = figure(height=300, title="Happiness", x_axis_type="datetime")
    fig.line([1, 2, 3], [3, 2, 1], legend_label="team a")
    fig.scatter([1, 2, 3], [1, 2, 3], legend_label="team b", size=6)
    fig.add_tools(HoverTool(tooltips=[("x", "@x"), ("y", "@y")]))
    doc.add_root(column(row(Div(text="Teams"), Button(label="Refresh")), fig, sizing_mode="stretch_width"))
    return doc


def panel_doc() -> Document:
    """A Panel layout of a widget and a Bokeh pane, as the Panel dashboards build them."""
    doc = Document()
    fig = figure(height=300)
    fig.line([1, 2, 3], [3, 2, 1])
    root = pn.Column(pn.widgets.IntSlider(start=1, end=30, value=7, label="days"), pn.pane.Bokeh(fig)).get_root(doc)
    if root not in doc.roots:
        doc.add_root(root)
    return doc


DOCS: dict[str, Callable[[], Document]] = {"slow-query": slow_query_doc, "figure": figure_doc, "panel": panel_doc}


def per_call_ms(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def configure(config: str) -> None:
    """'stock', 'patched', or 'patched-but-<attribute>' (one original restored)."""
    properties.uninstall()
    if config == "stock":
        return
    assert properties.install()
    if config.startswith("patched-but-"):
        skip = config.removeprefix("patched-but-")
        for (owner, name), original in properties._originals.items():  # benchmark-only peek
            if name == skip:
                setattr(owner, name, original)


def measure(configs: list[str], rounds: int, n: int) -> dict[str, dict[str, dict[str, float]]]:
    samples = {doc: {c: {"build": [], "to_json": []} for c in configs} for doc in DOCS}
    for _ in range(rounds):
        for config in configs:
            configure(config)
            for name, make in DOCS.items():
                make()  # warm the per-class caches (install() starts them empty)
                doc = make()
                doc.to_json()
                samples[name][config]["build"].append(per_call_ms(make, n))
                samples[name][config]["to_json"].append(per_call_ms(doc.to_json, n))
    properties.uninstall()
    return {doc: {c: {k: round(min(v), 3) for k, v in by_kind.items()} for c, by_kind in by_config.items()}
            for doc, by_config in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("-n", type=int, default=20, help="calls per round")
    parser.add_argument("--ablation", action="store_true", help="also measure all patches but one")
    args = parser.parse_args()

    configs = ["stock", "patched"]
    if args.ablation:
        configs += [f"patched-but-{name}" for _, name, _ in properties._PATCHES]
    results = measure(configs, args.rounds, args.n)

    print(f"ms per document (best of {args.rounds} rounds of {args.n}), bokeh {bokeh.__version__}")
    print(f"{'document':12s} {'config':48s} {'build':>8s} {'ratio':>6s} {'to_json':>8s} {'ratio':>6s}")
    for doc, by_config in results.items():
        stock = by_config["stock"]
        for config, ms in by_config.items():
            ms["build_ratio"] = round(ms["build"] / stock["build"], 3)
            ms["to_json_ratio"] = round(ms["to_json"] / stock["to_json"], 3)
            print(f"{doc:12s} {config:48s} {ms['build']:8.2f} {ms['build_ratio']:6.2f} "
                  f"{ms['to_json']:8.2f} {ms['to_json_ratio']:6.2f}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "bokeh": bokeh.__version__, "panel": pn.__version__, "python": platform.python_version(),
        "rounds": args.rounds, "calls_per_round": args.n, "statistic": "min over rounds of mean ms per call",
        "results": results,
    }, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
