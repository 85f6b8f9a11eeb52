"""CPU of a worker's Bokeh loop by phase, for the per-session breakdown (README, Benchmark).

The loop's total CPU is the thread's (/proc); what it spends on the three synchronous steps
every session takes is counted here with the thread's own clock (time.thread_time(), a
fraction of a microsecond per reading):

- build: the app builds a new session's document (Application.initialize_document)
- pull:  the document serialized for its page (the PULL-DOC-REPLY message)
- patch: changes serialized for the pages (PATCH-DOC: the query's result, live updates)

The rest of the loop (autoload.js, websockets, Tornado, callbacks, collections) is the total
less these. The counts go to app.metrics.BOKEH_CPU_SECONDS.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable

from app import metrics

_inside = threading.local()  # a phase inside a phase counts once, in the outer one


def _timed(phase: str, func: Callable[..., Any]) -> Callable[..., Any]:
    counter = metrics.BOKEH_CPU_SECONDS.labels(phase)

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "phase", None) is not None:
            return func(*args, **kwargs)
        _inside.phase = phase
        began = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            counter.inc(time.thread_time() - began)
            _inside.phase = None
    timed.__wrapped_phase__ = phase  # type: ignore[attr-defined]
    return timed


def install() -> None:
    """Wrap the three steps, once per process: the wrappers are marked on Bokeh's classes, so a
    worker that read this module again (app.serving.hooks.load_code_from_disk) wraps nothing twice."""
    from bokeh.application.application import Application
    from bokeh.protocol.messages.patch_doc import patch_doc
    from bokeh.protocol.messages.pull_doc_reply import pull_doc_reply

    if hasattr(Application.initialize_document, "__wrapped_phase__"):
        return
    Application.initialize_document = _timed("build", Application.initialize_document)
    pull_doc_reply.create = classmethod(_timed("pull", pull_doc_reply.create.__func__))
    patch_doc.create = classmethod(_timed("patch", patch_doc.create.__func__))
