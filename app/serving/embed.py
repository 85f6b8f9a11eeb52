"""Where a page loads a Bokeh session from: the autoload.js URL with the token, and its element.

bokeh.embed.server_document() drops argument keys beginning with "bokeh-", so it cannot
carry a token; this builds the same autoload.js URL, and the token goes beside it. The page's
loader (app/web/static/dashboard.js) fetches it, and fetches a new one from Flask when the
session's worker goes away.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from bokeh.util.serialization import make_id

# The header the page's loader sends autoload.js's token in (read by app.serving.bokeh_server).
TOKEN_HEADER = "X-Bokeh-Token"


def app_url(base_url: str, worker: str, dashboard: str) -> str:
    return f"{base_url.rstrip('/')}/bokeh/{worker}/{dashboard}"


@dataclass(frozen=True)
class Embed:
    """Where a page loads one session from: its worker, autoload.js URL and target element."""

    worker: str
    src: str
    element_id: str
    token: str

    def as_json(self) -> dict[str, str]:
        return {"worker": self.worker, "src": self.src, "elementid": self.element_id, "token": self.token}


def autoload(base_url: str, worker: str, dashboard: str, token: str) -> Embed:
    url = app_url(base_url, worker, dashboard)
    element_id = make_id()
    query = urlencode({
        "bokeh-autoload-element": element_id,
        "bokeh-app-path": f"/bokeh/{worker}/{dashboard}",
        "bokeh-absolute-url": url,
    })
    # The token travels in a header (TOKEN_HEADER), never in the URL: URLs end up in access
    # and error logs (nginx's error log writes the whole request line), headers do not.
    return Embed(worker, f"{url}/autoload.js?{query}", element_id, token)
