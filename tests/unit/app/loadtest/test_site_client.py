"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import asyncio


def test_the_caching_resolver_resolves_each_address_once():
    import socket

    from app.loadtest.site_client import CachingResolver

    calls = []

    class Counting:
        async def resolve(self, host, port, family=socket.AF_UNSPEC):
            calls.append((host, port))
            return [(socket.AF_INET, (host, port))]

    async def scenario():
        resolver = CachingResolver()
        resolver._fallback = Counting()
        first = [await resolver.resolve("127.0.0.1", 8080) for _ in range(3)]
        other = await resolver.resolve("127.0.0.1", 8081)
        return first, other
    first, other = asyncio.run(scenario())
    assert first == [[(socket.AF_INET, ("127.0.0.1", 8080))]] * 3 and other == [(socket.AF_INET, ("127.0.0.1", 8081))]
    assert calls == [("127.0.0.1", 8080), ("127.0.0.1", 8081)]


def test_a_server_document_page_is_read_and_its_token_taken_from_autoload_js():
    import io

    from bokeh.embed import server_document
    from tornado.httpclient import HTTPRequest, HTTPResponse

    from app.loadtest.site_client import parse_page, with_autoload_token

    body = server_document("http://127.0.0.1:5006/slow_query", arguments={"seconds": "5", "variant": "3"})
    page = parse_page(200, f"<html><body>{body}</body></html>")
    assert page.app_url == "http://127.0.0.1:5006/slow_query"
    assert page.websocket_url == "ws://127.0.0.1:5006/slow_query/ws"
    assert page.autoload_url.startswith("http://127.0.0.1:5006/slow_query/autoload.js?") and "variant=3" in \
        page.autoload_url
    assert page.token == ""
    js = b'(function(root) { const docs_json = {}; const render_items = [{"token":"eyJzZXNzaW9uX2lkIjoiYWJj.x-y_z",' \
         b'"elementid":"e1"}]; })(window);'
    autoload = HTTPResponse(HTTPRequest(page.autoload_url), 200, buffer=io.BytesIO(js))
    assert with_autoload_token(page, autoload).token == "eyJzZXNzaW9uX2lkIjoiYWJj.x-y_z"


def test_a_page_load_follows_a_307_to_itself_as_a_browser_does_and_a_post_does_not():
    """The site answers a page load that met a database restart with a 307 to itself."""
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from app.loadtest.site_client import SiteClient

    hits = []

    class Restarting(tornado.web.RequestHandler):
        def get(self):
            hits.append(self.request.uri)
            if len(hits) == 1:
                self.redirect(self.request.uri, status=307)
            else:
                self.write("charted")

        def post(self):
            self.redirect(self.request.uri, status=307)

    async def scenario():
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/.*", Restarting)]))
        server.add_sockets(sockets)
        client = SiteClient(f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
        try:
            page = await client.request("GET", "/dashboards/team?days=7")
            post = await client.request("POST", "/entries", form={"score": "5"})
        finally:
            server.stop()
        return page, post
    page, post = asyncio.run(scenario())
    assert page.code == 200 and page.body == b"charted"
    assert hits == ["/dashboards/team?days=7"] * 2
    assert post.code == 307  # a write is never repeated behind the user's back
