"""Send the definitions of Python-only models (``defs``) only to documents that can use them.

``Document.to_json()`` (every session's PULL-DOC reply) encodes the definition of every
``DataModel`` class the process has ever imported. With Panel imported that is 18 classes,
4.7 kB of a slow-query document's 6.8 kB reply, encoded anew for every session (0.3 ms), sent
through nginx and parsed by every browser and the load tester. BokehJS needs a definition
only to build an instance of that class, and a document built of Bokeh's own models has
none: a document holds a ``DataModel`` only if one of its models is one, or is a Panel model
(Panel's components create their ``DataModel`` instances themselves, later).

So a document with neither gets the reply without ``defs``, and every other document gets
stock's reply, unchanged. Our Bokeh dashboards never add a Panel model to a session after
its pull; a dashboard that did would have to be a Panel document from the start.

Version-guarded like bokeh_apps.speedups.properties: the replacement repeats Bokeh 3.9's
``to_json`` without the ``defs``, tests/unit/bokeh_apps/speedups/test_model_defs.py checks it
against stock.
"""
from __future__ import annotations

import logging
from typing import Any

import bokeh
from bokeh.core.has_props import is_DataModel
from bokeh.core.serialization import Serialized, Serializer
from bokeh.document import Document
from bokeh.document.json import DocJson
from bokeh.util.version import __version__

log = logging.getLogger(__name__)

SUPPORTED_VERSION_PREFIX = "3.9."
_stock: dict[str, Any] = {}


def needs_defs(doc: Document) -> bool:
    """Whether `doc` holds a DataModel, or a Panel model that may create one."""
    for model in doc.models:
        cls = type(model)
        if cls.__module__.startswith("panel.") or is_DataModel(cls):
            return True
    return False


def to_json(self: Document, *, deferred: bool = True) -> DocJson | Serialized[DocJson]:
    if needs_defs(self):
        return _stock["to_json"](self, deferred=deferred)
    serializer = Serializer(deferred=deferred)
    config = serializer.encode(self._config)
    roots = serializer.encode(self._roots)
    callbacks = serializer.encode(self.callbacks.js_event_callbacks)
    doc_json = DocJson(version=__version__, title=self.title, config=config, roots=roots)
    if self.callbacks.js_event_callbacks:
        doc_json["callbacks"] = callbacks
    self.models.flush_synced()
    if deferred:
        return Serialized(doc_json, buffers=serializer.buffers)
    return doc_json


def install() -> bool:
    """Patch Document.to_json (idempotent). False, with a warning, on an untested Bokeh version."""
    if not bokeh.__version__.startswith(SUPPORTED_VERSION_PREFIX):
        log.warning("bokeh %s is not %sx: model definitions are sent to every document",
                    bokeh.__version__, SUPPORTED_VERSION_PREFIX)
        return False
    if not _stock:
        _stock["to_json"] = Document.__dict__["to_json"]
        Document.to_json = to_json  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Restore Bokeh's own to_json (for tests and benchmarks)."""
    if _stock:
        Document.to_json = _stock.pop("to_json")  # type: ignore[method-assign]
