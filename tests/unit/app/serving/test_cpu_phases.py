"""The Bokeh loop's CPU by phase (app.serving.cpu_phases): real Bokeh documents and messages,
the thread's own CPU clock."""
from __future__ import annotations

import time

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.protocol import Protocol

from app import metrics
from app.serving import cpu_phases


def counted(phase: str) -> float:
    return metrics.BOKEH_CPU_SECONDS.labels(phase)._value.get()


def burn(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_build_counts_its_cpu_and_not_its_waits():
    cpu_phases.install()
    app = Application(FunctionHandler(lambda doc: burn(0.03)))
    before = counted("build")
    app.initialize_document(Document())
    assert 0.03 <= counted("build") - before < 0.2

    app = Application(FunctionHandler(lambda doc: time.sleep(0.1)))
    before = counted("build")
    app.initialize_document(Document())
    assert counted("build") - before < 0.02  # asleep, not on the CPU


def test_pull_and_patch_messages_are_counted_once_however_often_install_ran():
    cpu_phases.install()
    cpu_phases.install()
    doc = Document()
    source = ColumnDataSource(data={"x": list(range(1000))})
    doc.add_root(source)
    protocol = Protocol()

    before = counted("pull")
    protocol.create("PULL-DOC-REPLY", "1", doc)
    pulled = counted("pull") - before
    assert pulled > 0

    events = []
    doc.on_change(lambda event: events.append(event))
    source.data = {"x": list(range(2000))}
    before = counted("patch")
    protocol.create("PATCH-DOC", events)
    patched = counted("patch") - before
    assert patched > 0

    # Wrapped once: a second wrap would count every call twice (each with its own clock).
    from bokeh.application.application import Application as Stock
    assert not hasattr(Stock.initialize_document.__wrapped__, "__wrapped_phase__")
