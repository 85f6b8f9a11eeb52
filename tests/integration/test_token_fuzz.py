"""Every place a session token or session id travels, fed arbitrary input (hypothesis), through
the edge's nginx and straight at a worker's Bokeh port: autoload.js's X-Bokeh-Token header,
the websocket subprotocol, the bokeh-session-id argument and header, and the bokeh-token URL
argument. Each answer is a 4xx (a websocket refused), never a 5xx; a request is accepted only
when app.tokens.verify accepts its token; afterwards the worker still serves a valid session.

Requests are written on raw sockets: an HTTP client library refuses to send most of these
headers, and what matters is what the servers do with the bytes a stranger can send."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote

import panel  # noqa: F401  (registers Panel's models for documents pulled over the websocket)
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tornado.web import RequestHandler

from app import access, tokens
from app.loadtest.site_client import BokehSession
from tests.integration.helpers import assert_clean_log, mint, principal, workers

DASHBOARD = "my-happiness"
# Moderate: 400 requests for the module, well under a minute on a shared machine.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
# Tornado reads at most 64 KiB of headers (its max_header_size) and then closes the connection
# without an answer; nginx answers 400 above its large_client_header_buffers (32k per line).
TORNADO_MAX_HEADER = 65536


@dataclass(frozen=True)
class Target:
    """Where a request goes: the edge (nginx) or one worker's Bokeh port, both for worker `name`."""

    via: str
    port: int


@dataclass(frozen=True)
class Kit:
    worker: str
    targets: tuple[Target, ...]
    secret: bytes
    good: str               # valid for DASHBOARD on `worker` for ten minutes
    almost: tuple[str, ...]  # tokens that are nearly right and must all be refused
    public_port: int


@pytest.fixture(scope="module")
def kit(site) -> Kit:
    (name, (port, _pid)), (other, _) = sorted(workers(site).items())[:2]
    secret = site.settings.bokeh_secret_bytes
    alice = principal(site, "alice")
    good = mint(site, "alice", DASHBOARD, name, {"days": 30}, ttl=600)
    claims = tokens.SessionClaims(alice, DASHBOARD, {"days": 30}, name)
    payload, signature = good.split(".")  # Bokeh's token: payload.signature
    almost = (
        mint(site, "alice", DASHBOARD, name, {"days": 30}, ttl=-10),          # expired
        mint(site, "alice", DASHBOARD, other, {"days": 30}, ttl=600),         # the other worker's
        mint(site, "alice", "team", name, {"days": 30}, ttl=600),             # another dashboard's
        mint(site, "carol", DASHBOARD, name, {"days": 30, "user": 1}, ttl=600),  # claims the rules refuse
        tokens.mint(claims, b"not the site's secret, but long enough", 600)[1],  # wrong signature
        payload, f"{payload}.",                                               # signature cut off
        f"{payload}.{signature}.{signature}",                                 # one part too many
        f"{signature}.{payload}",                                             # parts swapped
        good + "=", good[:-1], " " + good, good + ",x",
    )
    targets = (Target("edge", site.settings.public_port), Target("worker", port))
    return Kit(name, targets, secret, good, almost, site.settings.public_port)


def raw_request(port: int, path: bytes, headers: list[tuple[bytes, bytes]], timeout: float = 15.0) -> int | None:
    """Send one GET as bytes; the status of the answer, or None if the server closed without one."""
    request = (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\n"
               + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: its answer, if any, is still there
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(match.group(1)) if match else None


def autoload_path(kit: Kit, extra: bytes = b"") -> bytes:
    base = f"http://127.0.0.1:{kit.public_port}/bokeh/{kit.worker}/{DASHBOARD}"
    return (f"/bokeh/{kit.worker}/{DASHBOARD}/autoload.js?bokeh-autoload-element=x"
            f"&bokeh-absolute-url={quote(base, safe='')}").encode() + extra


def upgrade_headers(kit: Kit, protocols: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", base64.b64encode(os.urandom(16))),
            (b"Origin", f"http://127.0.0.1:{kit.public_port}".encode()), (b"Sec-WebSocket-Protocol", protocols)]


def accepts(kit: Kit, value: bytes) -> bool:
    """The oracle: the site's own check of a token for this dashboard on this worker."""
    try:
        token = value.decode("ascii")
        claims = tokens.verify(token, kit.secret, dashboard=DASHBOARD, worker=kit.worker)
    except (UnicodeDecodeError, tokens.TokenError):
        return False
    try:
        access.authorize(claims.principal, claims.dashboard, access.parse_params(
            claims.dashboard, {k: str(v) for k, v in claims.params.items() if v is not None}))
    except access.AccessError:
        return False
    return True


def as_argument(value: bytes) -> bytes:
    """What Tornado's get_argument makes of a URL argument: control characters become spaces,
    then it is stripped (so a token with a tab around it is still the token)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value  # Tornado answers 400; the oracle refuses it too
    return RequestHandler._remove_control_chars_regex.sub(" ", text).strip().encode("utf-8")


def check(status: int | None, *, size: int, target: Target, accepted: bool, ok: int) -> None:
    if status is None:  # only Tornado's own limit on header size closes without an answer
        assert target.via == "worker" and size > TORNADO_MAX_HEADER // 2, (target, size)
        return
    assert status < 500, (target, status)
    if accepted:
        assert status == ok, (target, status)
    else:
        assert 400 <= status < 500, (target, status)


def fuzz_values(kit: Kit) -> st.SearchStrategy[bytes]:
    """Text (as UTF-8), raw bytes, huge values, and near misses of a valid token."""
    mutated = st.builds(
        lambda i, c: (kit.good[:i] + c + kit.good[i + 1:]).encode("utf-8"),
        st.integers(0, len(kit.good) - 1), st.characters(codec="utf-8"))
    # Shaped like a token: base64url parts and dots, and signed-looking JSON payloads.
    tokenish = st.from_regex(r"[A-Za-z0-9_=-]{0,80}(\.[A-Za-z0-9_=-]{0,60}){0,3}", fullmatch=True)
    payloads = st.builds(lambda obj, sig: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=") + b"." + sig,
                         st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                                          st.sampled_from(["session_id", "session_expiry", "uid", "wkr", "dash", "x"]),
                                          inner, max_size=4), max_leaves=8),
                         st.sampled_from([b"", kit.good.split(".")[1].encode(), b"AAAA"]))
    return st.one_of(
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.text(st.characters(max_codepoint=127), max_size=200).map(str.encode),
        tokenish.map(str.encode),
        payloads,
        st.binary(max_size=200),
        st.integers(1_000, 120_000).flatmap(lambda n: st.sampled_from([b"A" * n, (kit.good.encode() * (n // 200 + 1))[:n]])),
        mutated,
        st.sampled_from(kit.almost).map(str.encode),
    )


def with_cases(kit: Kit, **fixed: object):
    """Every near miss and huge size on both targets, besides what hypothesis draws: they are
    a few of its thousands of shapes, and each must be tried every run."""
    values = [t.encode() for t in kit.almost] + [b"", b"A" * 40_000, b"A" * 120_000,
                                                 (kit.good.encode() * 700)[:100_000]]

    def decorate(fuzz):
        for value in values:
            for target in kit.targets:
                fuzz = example(value=value, target=target, **fixed)(fuzz)
        return fuzz
    return decorate


def header_safe(value: bytes) -> bytes:
    """No CR or LF: they would end the header line, not be in it (that is another request)."""
    return value.replace(b"\r", b"").replace(b"\n", b"")


def still_serves(site, kit: Kit) -> None:
    """A fresh session on the fuzzed worker charts, through the edge."""
    token = mint(site, "alice", DASHBOARD, kit.worker, {"days": 30})
    for target in kit.targets:
        assert raw_request(target.port, autoload_path(kit), [(b"X-Bokeh-Token", token.encode())]) == 200

    async def chart() -> str | None:
        url = f"ws://127.0.0.1:{kit.public_port}/bokeh/{kit.worker}/{DASHBOARD}/ws"
        session = await BokehSession.connect(url, token, f"http://127.0.0.1:{kit.public_port}")
        try:
            await session.wait_for_chart(timeout=60)
            return session.query_state
        finally:
            session.close()
    assert asyncio.run(chart()) == "done"


def test_autoload_token_header(site, kit):
    @FUZZ
    @with_cases(kit)
    @given(value=fuzz_values(kit), target=st.sampled_from(kit.targets))
    def fuzz(value: bytes, target: Target) -> None:
        value = header_safe(value)
        status = raw_request(target.port, autoload_path(kit), [(b"X-Bokeh-Token", value)])
        check(status, size=len(value), target=target, accepted=accepts(kit, value.strip(b" \t")), ok=200)
    fuzz()
    still_serves(site, kit)


def test_websocket_subprotocol(site, kit):
    @FUZZ
    @with_cases(kit, prefixed=True)
    @given(value=fuzz_values(kit), prefixed=st.booleans(), target=st.sampled_from(kit.targets))
    def fuzz(value: bytes, prefixed: bool, target: Target) -> None:
        value = header_safe(value)
        protocols = b"bokeh, " + value if prefixed else value
        status = raw_request(target.port, f"/bokeh/{kit.worker}/{DASHBOARD}/ws".encode(), upgrade_headers(kit, protocols))
        # Accepted only as BokehJS sends it: "bokeh, <token>", the token whole.
        accepted = prefixed and accepts(kit, value.strip(b" \t")) and b"," not in value
        check(status, size=len(protocols), target=target, accepted=accepted, ok=101)
    fuzz()
    still_serves(site, kit)


def test_session_id_argument_and_header(site, kit):
    """Sessions are named by the token only: a bokeh-session-id of any kind is refused, with a
    valid token (Bokeh: 'both token and session ID') or without one."""
    @FUZZ
    @with_cases(kit, in_header=False, with_token=False)
    @given(value=fuzz_values(kit), in_header=st.booleans(), with_token=st.booleans(),
           target=st.sampled_from(kit.targets))
    def fuzz(value: bytes, in_header: bool, with_token: bool, target: Target) -> None:
        headers = [(b"X-Bokeh-Token", kit.good.encode())] if with_token else []
        if in_header:
            value = header_safe(value)
            headers.append((b"Bokeh-Session-Id", value))
            path = autoload_path(kit)
        else:
            path = autoload_path(kit, b"&bokeh-session-id=" + quote(value, safe="").encode())
        status = raw_request(target.port, path, headers)
        check(status, size=len(path) + len(value), target=target, accepted=False, ok=200)
    fuzz()
    still_serves(site, kit)


def test_token_in_the_url(site, kit):
    """The edge refuses any URL token (400) before it could be logged; a worker reached directly
    checks it like the header's."""
    @FUZZ
    @with_cases(kit)
    @given(value=fuzz_values(kit), target=st.sampled_from(kit.targets))
    def fuzz(value: bytes, target: Target) -> None:
        path = autoload_path(kit, b"&bokeh-token=" + quote(value, safe="").encode())
        status = raw_request(target.port, path, [])
        if target.via == "edge" and status is not None:
            assert status == 400 or (status == 414 and len(path) > 8000), status
            return
        check(status, size=len(path), target=target, accepted=accepts(kit, as_argument(value)), ok=200)
    fuzz()
    still_serves(site, kit)


def test_fuzzing_left_no_uncaught_exception(site, output_dir):
    assert_clean_log(output_dir / "site-logs" / "gunicorn.log")
