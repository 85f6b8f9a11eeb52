"""Panel's autoload.js resource bundle, built once per kind of document instead of per request."""
from __future__ import annotations

from typing import Any

_bundle_cache: dict[tuple, Any] = {}


def install() -> None:
    """Panel's autoload.js handler rebuilds the same resource bundle for every session:
    17% of a worker's CPU in a burst of new sessions (py-spy, make bench load (b)). The
    bundle depends on the kinds of models in the document (for MathJax) and on the
    resources' settings, so it is built once per such key; each request gets a copy,
    because the handler appends the session's own script to it."""
    import panel.io.server as panel_server
    from bokeh.embed.bundle import Bundle

    original = getattr(panel_server.bundle_resources, "__wrapped__", panel_server.bundle_resources)

    def bundle_resources(roots, resources, *args: Any, **kwargs: Any):
        from panel.config import panel_extension
        from panel.io.state import state

        # The document's model index, not root.references(): walking the graph cost as much as it saved.
        doc = roots[0].document if roots else None
        types = frozenset(type(m) for m in doc.models) if doc is not None else frozenset()
        key = (types, resources.mode, resources.root_url, getattr(resources, "absolute", None),
               tuple(resources.components), state.rel_path, tuple(sorted(panel_extension._loaded_extensions)),
               args, tuple(sorted(kwargs.items())))
        bundle = _bundle_cache.get(key)
        if bundle is None:
            bundle = _bundle_cache[key] = original(roots, resources, *args, **kwargs)
        return Bundle(bundle.js_files, bundle.js_raw, bundle.css_files, bundle.css_raw, bundle.hashes)

    bundle_resources.__wrapped__ = original  # type: ignore[attr-defined]
    panel_server.bundle_resources = bundle_resources
