"""The <script> that embeds a Bokeh session: Bokeh's own autoload request tag, plus the token.

bokeh.embed.server_document() drops argument keys beginning with "bokeh-", so it cannot
carry a token; this builds the same autoload.js URL with bokeh-token added.
"""
from __future__ import annotations

from urllib.parse import urlencode

from bokeh.core.templates import AUTOLOAD_REQUEST_TAG
from bokeh.util.serialization import make_id
from markupsafe import Markup


def app_url(base_url: str, worker: str, dashboard: str) -> str:
    return f"{base_url.rstrip('/')}/bokeh/{worker}/{dashboard}"


def autoload_tag(base_url: str, worker: str, dashboard: str, token: str) -> Markup:
    url = app_url(base_url, worker, dashboard)
    element_id = make_id()
    query = urlencode({
        "bokeh-autoload-element": element_id,
        "bokeh-app-path": f"/bokeh/{worker}/{dashboard}",
        "bokeh-absolute-url": url,
        "bokeh-token": token,
    })
    html = AUTOLOAD_REQUEST_TAG.render(src_path=f"{url}/autoload.js?{query}", elementid=element_id,
                                       headers={}, with_credentials=False)
    return Markup(html)
