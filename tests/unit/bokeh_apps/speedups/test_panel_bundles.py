"""The worker's Bokeh set-up that needs no running server: the autoload bundle cache."""
from __future__ import annotations

import panel.io.server as panel_server
from bokeh.document import Document
from bokeh.embed.bundle import Script
from bokeh.models import Div
from bokeh.resources import Resources

from bokeh_apps.speedups import panel_bundles


def test_autoload_bundles_are_built_once_and_handed_out_as_copies():
    panel_bundles.install()
    panel_bundles.install()  # idempotent: wraps the original once
    doc = Document()
    doc.add_root(Div(text="x"))
    resources = Resources(mode="server", root_url="http://127.0.0.1:8080/bokeh/w1/")
    first = panel_server.bundle_resources(doc.roots, resources)
    first.add(Script("session-specific"))
    second = panel_server.bundle_resources(doc.roots, resources)
    assert "session-specific" not in second.js_raw
    assert second.js_files == first.js_files and second.js_files
    original = panel_server.bundle_resources.__wrapped__(doc.roots, resources)
    assert [str(u) for u in original.js_files] == [str(u) for u in second.js_files]
    assert original.js_raw == second.js_raw
