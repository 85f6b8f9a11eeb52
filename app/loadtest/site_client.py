"""A client that uses the site the way a browser does, without a browser.

Log in (with the form's CSRF token), request a dashboard page, fetch its autoload.js, open
the session's websocket with the token as subprotocol, pull the document and apply the
server's patches until a condition holds. Used by the integration tests and the load tester.
"""
from __future__ import annotations

import asyncio
import html
import json
import re
import socket
import time
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from bokeh.document import Document
from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.websocket import WebSocketClientConnection, websocket_connect

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_EMBED = re.compile(r'<div id="dashboard"([^>]*)>')
_ATTRIBUTE = re.compile(r'data-([a-z-]+)="([^"]*)"')
TOKEN_HEADER = "X-Bokeh-Token"  # as the page's loader sends it (app/web/static/dashboard.js)
# A page built with bokeh.embed.server_document (make bench's peer): its loader's request,
# and the session token the autoload.js it fetches carries.
_SERVER_DOCUMENT = re.compile(r"""xhr\.open\('GET', "([^"]+)", true\)""")
_AUTOLOAD_TOKEN = re.compile(r'\\?"token\\?":\s*\\?"([A-Za-z0-9_.\-]+)')
# What BokehJS sends once it has rendered a pulled document (Panel starts pn.state.onload on it).
DOCUMENT_READY = json.dumps({"events": [{"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": {
    "type": "event", "name": "document_ready", "values": {"type": "map", "entries": []}}}]})


class CachingResolver(Resolver):
    """Resolves each (host, port, family) once. Tornado's default resolver runs getaddrinfo
    on a thread pool for every new connection, even to 127.0.0.1: a quarter of the load
    tester's py-spy samples in a burst of sessions (make bench load (b))."""

    def initialize(self) -> None:  # tornado's Configurable calls this instead of __init__
        self._fallback = DefaultLoopResolver()
        self._known: dict[tuple[str, int, int], list[tuple[int, Any]]] = {}

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
                      ) -> list[tuple[int, Any]]:
        key = (host, port, int(family))
        if key not in self._known:
            self._known[key] = await self._fallback.resolve(host, port, family)
        return self._known[key]


# 307/308 keep the method; followed like a browser, but not forever (browsers stop at ~20).
MAX_SAME_METHOD_REDIRECTS = 5


class ClientError(RuntimeError):
    """The site answered something a browser user would see as a failure.

    `status` is the HTTP status when there was one (599: no answer at all).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(ClientError):
    """The server closed the websocket."""


@dataclass(frozen=True)
class EmbeddedPage:
    status: int
    worker: str
    autoload_url: str
    token: str
    app_url: str

    @property
    def websocket_url(self) -> str:
        return re.sub(r"^http", "ws", self.app_url) + "/ws"


def parse_page(status: int, body: str) -> EmbeddedPage:
    """The session a dashboard page embeds: its `#dashboard` element's data attributes."""
    match = _EMBED.search(body)
    data = {k: html.unescape(v) for k, v in _ATTRIBUTE.findall(match.group(1))} if match else {}
    loader = _SERVER_DOCUMENT.search(body)
    if not data and loader is not None:  # server_document(): the token comes with autoload.js
        src = html.unescape(loader.group(1))
        return EmbeddedPage(status, "", src, "", parse_qs(urlsplit(src).query)["bokeh-absolute-url"][0])
    if not {"src", "token", "worker"} <= data.keys():
        raise ClientError(f"the dashboard page has no Bokeh embed (HTTP {status})")
    app_url = parse_qs(urlsplit(data["src"]).query)["bokeh-absolute-url"][0]
    return EmbeddedPage(status, data["worker"], data["src"], data["token"], app_url)


class SiteClient:
    """One browser user: a cookie jar and the site's base URL."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, http: AsyncHTTPClient | None = None,
                 resolver: Resolver | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cookies: SimpleCookie = SimpleCookie()
        # Pass a shared client to lift tornado's default of 10 concurrent requests per client
        # (AsyncHTTPClient(force_instance=True, max_clients=...)); the load tester does, with
        # a CachingResolver, which it passes here too for the websockets.
        self.http = http or AsyncHTTPClient()
        self.resolver = resolver

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def request(self, method: str, path: str, *, form: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, _redirects: int = 0) -> HTTPResponse:
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        url = path if path.startswith("http") else self.base_url + path
        try:
            response = await self.http.fetch(HTTPRequest(url, method=method, body=body, headers=hdrs,
                                                         follow_redirects=False, request_timeout=self.timeout),
                                             raise_error=False)
        except (OSError, HTTPClientError, StreamClosedError) as exc:
            # raise_error=False only covers answers with a status; no answer at all (refused,
            # DNS, timeout, closed stream) still raises. The cause says which.
            raise ClientError(f"cannot reach {url}: {exc}", status=599) from exc
        for cookie in response.headers.get_list("Set-Cookie"):
            self.cookies.load(cookie)
        if response.code in (307, 308) and method in ("GET", "HEAD") and _redirects < MAX_SAME_METHOD_REDIRECTS:
            # What a browser does: the site answers a page load that met a database restart
            # with a 307 to itself once the database is back (app.web.errors).
            return await self.request(method, response.headers["Location"], headers=headers,
                                      _redirects=_redirects + 1)
        return response

    async def login(self, username: str, password: str) -> None:
        page = await self.request("GET", "/login")
        match = _CSRF.search(page.body.decode())
        if match is None:
            raise ClientError(f"no login form at {self.base_url}/login (HTTP {page.code})", status=page.code)
        response = await self.request("POST", "/login", form={"csrf_token": match.group(1),
                                                                "username": username, "password": password})
        if response.code != 302:
            raise ClientError(f"login as {username!r} failed (HTTP {response.code})", status=response.code)

    async def open_dashboard(self, name: str, **params: Any) -> EmbeddedPage:
        query = f"?{urlencode(params)}" if params else ""
        response = await self.request("GET", f"/dashboards/{name}{query}")
        if response.code != 200:
            raise ClientError(f"/dashboards/{name} answered HTTP {response.code}", status=response.code)
        return parse_page(response.code, response.body.decode())

    async def fetch_autoload(self, page: EmbeddedPage) -> HTTPResponse:
        return await self.request("GET", page.autoload_url, headers={TOKEN_HEADER: page.token} if page.token else {})

    async def connect(self, page: EmbeddedPage, *, origin: str | None = None, light: bool = False,
                      ready: bool = False):
        """A BokehSession (a live Document), or with light=True a LightSession (watched models only).
        ready=True: tell the server the document is ready, as BokehJS does once it rendered it."""
        kind = LightSession if light else BokehSession
        return await kind.connect(page.websocket_url, page.token, origin or self.origin, self.timeout,
                                  resolver=self.resolver, ready=ready)


def with_autoload_token(page: EmbeddedPage, autoload: HTTPResponse) -> EmbeddedPage:
    """A server_document() page's session token, from the autoload.js that created the session."""
    if page.token:
        return page
    match = _AUTOLOAD_TOKEN.search(autoload.body.decode(errors="replace"))
    if match is None:
        raise ClientError("autoload.js carries no session token")
    return replace(page, token=match.group(1))


class ProtocolSession:
    """A Bokeh protocol connection: ACK, pull the document, then read the server's patches.

    Subclasses decide what to keep: `_load` the pulled document, `_apply` each patch;
    `query_state` and `worker` read what they kept.
    """

    FINAL_STATES = ("done", "error")
    # Document events that carry chart data: a delta (stream, patch) or a whole new data set.
    DATA_EVENTS = ("ColumnsStreamed", "ColumnsPatched", "ColumnDataChanged")

    def __init__(self, ws: WebSocketClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self.protocol = Protocol()
        self.receiver = Receiver(self.protocol)
        # (monotonic arrival time, event kind, bytes of its message) of every data event,
        # for live-update tests and the live benchmark; a whole `data` assignment counts as
        # ColumnDataChanged.
        self.data_events: list[tuple[float, str, int]] = []

    def _load(self, reply: Any) -> None:
        raise NotImplementedError

    def _apply(self, patch: Any) -> None:
        raise NotImplementedError

    @property
    def query_state(self) -> str | None:
        raise NotImplementedError

    @classmethod
    async def connect(cls, ws_url: str, token: str, origin: str, timeout: float = 30.0,
                      resolver: Resolver | None = None, ready: bool = False):
        request = HTTPRequest(ws_url, headers={"Origin": origin}, request_timeout=timeout)
        ws = await websocket_connect(request, subprotocols=["bokeh", token], max_message_size=64 * 1024 * 1024,
                                     resolver=resolver)
        session = cls(ws, timeout)
        ack = await session._read()
        if ack.msgtype != "ACK":
            raise ClientError(f"expected ACK, got {ack.msgtype}")
        await session._send(session.protocol.create("PULL-DOC-REQ"))
        reply = await session._read()
        # Patches sent before the reply are already part of the state it carries.
        while reply.msgtype == "PATCH-DOC":
            reply = await session._read()
        if reply.msgtype != "PULL-DOC-REPLY":
            raise ClientError(f"expected PULL-DOC-REPLY, got {reply.msgtype}")
        session._load(reply)
        if ready:
            header = json.dumps({"msgid": f"ready-{id(session)}", "msgtype": "PATCH-DOC"})
            for part in (header, "{}", DOCUMENT_READY):
                await session.ws.write_message(part)
        return session

    async def _send(self, message: Any) -> None:
        for part in (message.header_json, message.metadata_json, message.content_json):
            await self.ws.write_message(part)

    async def _read(self) -> Any:
        while True:
            fragment = await self.ws.read_message()
            if fragment is None:
                raise ConnectionClosed("the server closed the websocket")
            message = await self.receiver.consume(fragment)
            if message is not None:
                return message

    async def _next_patch(self, remaining: float) -> None:
        message = await asyncio.wait_for(self._read(), remaining)
        if message.msgtype == "PATCH-DOC":
            self._record(message)
            self._apply(message)

    def _record(self, message: Any) -> None:
        size = len(message.content_json)
        for event in message.content.get("events", ()):
            kind = event.get("kind")
            if kind == "ModelChanged" and event.get("attr") == "data":
                kind = "ColumnDataChanged"
            if kind in self.DATA_EVENTS:
                self.data_events.append((time.monotonic(), kind, size))

    async def _until(self, holds: Callable[[], bool], timeout: float | None) -> float:
        """Apply patches until holds() is true; return the seconds waited."""
        started = time.monotonic()
        deadline = started + (timeout or self.timeout)
        while not holds():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError("condition not met before the timeout")
            await self._next_patch(remaining)
        return time.monotonic() - started

    async def settle(self, seconds: float) -> None:
        """Apply whatever the server sends during the next `seconds`."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                await self._next_patch(remaining)
            except asyncio.TimeoutError:
                return

    async def wait_for_chart(self, timeout: float | None = None) -> float:
        """Apply patches until the query is done or failed; return the seconds waited."""
        return await self._until(lambda: self.query_state in self.FINAL_STATES, timeout)

    def close(self) -> None:
        self.ws.close()


def _worker_tag(tags: Any) -> str | None:
    """The worker named by the dashboard root's `worker:<name>` tag."""
    for tag in tags or []:
        if isinstance(tag, str) and tag.startswith("worker:"):
            return tag.split(":", 1)[1]
    return None


class BokehSession(ProtocolSession):
    """A protocol connection holding a live copy of the session's document."""

    def __init__(self, ws: WebSocketClientConnection, timeout: float) -> None:
        super().__init__(ws, timeout)
        self.document = Document()

    def _load(self, reply: Any) -> None:
        reply.push_to_document(self.document)

    def _apply(self, patch: Any) -> None:
        patch.apply_to_document(self.document)

    async def wait_for(self, condition: Callable[[Document], bool], timeout: float | None = None) -> float:
        """Apply patches until condition(document) holds; return the seconds waited."""
        return await self._until(lambda: condition(self.document), timeout)

    def model(self, name: str) -> Any:
        return self.document.select_one({"name": name})

    @property
    def query_state(self) -> str | None:
        status = self.model("query-status")
        return status.tags[0] if status is not None and status.tags else None

    @property
    def worker(self) -> str | None:
        root = self.model("dashboard")
        return _worker_tag(root.tags if root is not None else None)


class LightSession(ProtocolSession):
    """The Bokeh protocol exchange of BokehSession, without building a Document.

    The server sees exactly what a browser does (ACK, PULL-DOC-REQ, the patches); the
    client keeps only the properties of the few named models it watches, read straight from
    the JSON. A load generator on the same machine as the site must not spend ~20 ms of
    CPU per session deserializing models it never looks at.
    """

    WATCHED = ("query-status", "dashboard")

    def __init__(self, ws: WebSocketClientConnection, timeout: float) -> None:
        super().__init__(ws, timeout)
        self.props: dict[str, dict[str, Any]] = {}
        self._names: dict[str, str] = {}  # model id -> watched name

    def _load(self, reply: Any) -> None:
        stack = list(reply.content["doc"]["roots"])
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                attrs = node.get("attributes")
                if node.get("type") == "object" and isinstance(attrs, dict) and attrs.get("name") in self.WATCHED:
                    self._names[node["id"]] = attrs["name"]
                    self.props[attrs["name"]] = dict(attrs)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    def _apply(self, patch: Any) -> None:
        for event in patch.content.get("events", ()):
            if event.get("kind") == "ModelChanged":
                name = self._names.get((event.get("model") or {}).get("id"))
                if name is not None:
                    self.props[name][event["attr"]] = event.get("new")

    @property
    def query_state(self) -> str | None:
        tags = self.props.get("query-status", {}).get("tags") or []
        return tags[0] if tags else None

    @property
    def status_text(self) -> str:
        return str(self.props.get("query-status", {}).get("text", ""))

    @property
    def worker(self) -> str | None:
        return _worker_tag(self.props.get("dashboard", {}).get("tags"))
