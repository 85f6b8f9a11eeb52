"""The prefetcher's bookkeeping (bokeh_apps.queries.prefetch) with a stand-in query service: which
token starts a query, who gets it, and when it is cancelled. The live behaviour (a real
page, PostgreSQL, the grace period) is tested in tests/integration/test_prefetch.py."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
from bokeh.util.token import get_session_id

from app import access, tokens
from app.access import Principal
from app.config import Settings
from bokeh_apps.queries.prefetch import Opening, Prefetcher
from bokeh_apps.queries.service import Progress, QuerySpec
from bokeh_apps.queries.viewer import SessionInfo

SETTINGS = Settings.from_env({"APP_ENV": "dev", "DATABASE_URL": "postgresql://x/y", "QUERY_PREFETCH_SECONDS": "0.2"})
ADMIN = Principal(1, "ada", "admin", None, False, None)
SQL = "SELECT pg_sleep($1)"


class StandInQueries:
    """Records which specs were started; each runs until cancelled."""

    def __init__(self) -> None:
        self.started: list[QuerySpec] = []
        self.cancelled: list[QuerySpec] = []

    def progress(self, spec: QuerySpec) -> Progress:
        return Progress(spec.label, spec.limit, 2)

    async def run(self, spec: QuerySpec, progress: Progress) -> list:
        self.started.append(spec)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.append(spec)
            raise
        return []


class StandInNotifications:
    def __init__(self) -> None:
        self.handlers: dict = {}

    def subscribe(self, channel: str, handler) -> None:
        self.handlers[channel] = handler


def opening(info: SessionInfo) -> Opening:
    return Opening(f"pg_sleep({info.params['seconds']})", SQL, (info.params["seconds"],))


def token(worker: str = "w3", dashboard: str = "slow-query", seconds: float = 5.0) -> str:
    claims = tokens.SessionClaims(ADMIN, dashboard, {"seconds": seconds, "variant": 0}, worker)
    return tokens.mint(claims, SETTINGS.bokeh_secret_bytes, 60)[1]


def spec_of(tok: str) -> QuerySpec:
    claims = tokens.verify(tok, SETTINGS.bokeh_secret_bytes)
    info = SessionInfo(claims, access.authorize(claims.principal, claims.dashboard, claims.params))
    return QuerySpec.for_session(SETTINGS, info, *dataclasses.astuple(opening(info)))


@pytest.fixture
def setup():
    queries, notifications = StandInQueries(), StandInNotifications()
    prefetcher = Prefetcher(SETTINGS, "w3", 3, queries, {"slow-query": opening}, notifications)
    (send,) = notifications.handlers.values()
    return prefetcher, queries, send


async def sent(send, tok: str) -> str:
    """Deliver a token as the notification would, and let the prefetcher start its query."""
    send(tok)
    await asyncio.sleep(0.05)
    return tok


def test_a_token_starts_its_opening_query_and_the_session_takes_it(setup):
    prefetcher, queries, send = setup

    async def scenario():
        tok = await sent(send, token())
        taken = prefetcher.take(get_session_id(tok), spec_of(tok))
        again = prefetcher.take(get_session_id(tok), spec_of(tok))
        running = taken is not None and not taken.future.done()
        await asyncio.sleep(SETTINGS.query_prefetch_seconds + 0.1)
        return taken, again, running, taken is not None and taken.future.done(), list(queries.cancelled)
    taken, again, running, expired, cancelled = asyncio.run(scenario())
    assert [s.args for s in queries.started] == [(5.0,)]
    assert taken is not None and taken.key == spec_of(token()).key and running
    assert not expired and cancelled == []  # taken: the grace period no longer applies
    assert again is None  # taken once: "run again" starts afresh


def test_an_untaken_query_is_cancelled_after_the_grace_period(setup):
    prefetcher, queries, send = setup

    async def scenario():
        tok = await sent(send, token())
        waiting = prefetcher.waiting
        await asyncio.sleep(SETTINGS.query_prefetch_seconds + 0.1)
        return waiting, prefetcher.take(get_session_id(tok), spec_of(tok))
    waiting, late = asyncio.run(scenario())
    assert waiting == 1 and late is None
    assert len(queries.cancelled) == 1 and prefetcher.waiting == 0


def test_a_session_asking_for_another_query_cancels_the_prefetched_one(setup):
    prefetcher, queries, send = setup

    async def scenario():
        tok = await sent(send, token(seconds=5.0))
        other = spec_of(token(seconds=6.0))
        taken = prefetcher.take(get_session_id(tok), other)
        await asyncio.sleep(0.05)
        return taken
    assert asyncio.run(scenario()) is None
    assert len(queries.cancelled) == 1


def test_a_token_arriving_after_its_session_opened_starts_nothing(setup):
    prefetcher, queries, send = setup

    async def scenario():
        tok = token()
        assert prefetcher.take(get_session_id(tok), spec_of(tok)) is None  # the session ran its own
        send(tok)
        send(tok)
        await asyncio.sleep(0.05)
    asyncio.run(scenario())
    assert queries.started == [] and prefetcher.waiting == 0


@pytest.mark.parametrize("bad, reason", [
    (lambda: token(worker="w4"), "another worker"),
    (lambda: token(dashboard="slow-query-blocking"), None),   # no opening query: silently nothing
    (lambda: "garbage", "signature is not valid"),
    (lambda: token()[:-3] + "abc", "signature is not valid"),
])
def test_tokens_that_are_not_for_this_worker_start_nothing(setup, caplog, bad, reason):
    prefetcher, queries, send = setup

    async def scenario():
        await sent(send, bad())
    asyncio.run(scenario())
    assert queries.started == [] and prefetcher.waiting == 0
    refused = [r.getMessage() for r in caplog.records if "prefetch refused" in r.getMessage()]
    assert (reason is None and not refused) or (len(refused) == 1 and reason in refused[0])


def test_prefetch_off_listens_to_nothing():
    notifications = StandInNotifications()
    off = dataclasses.replace(SETTINGS, query_prefetch_seconds=0.0)
    Prefetcher(off, "w3", 3, StandInQueries(), {"slow-query": opening}, notifications)
    assert notifications.handlers == {}


class QuickQueries(StandInQueries):
    """Each query finishes at once, with one row."""

    async def run(self, spec: QuerySpec, progress: Progress) -> list:
        self.started.append(spec)
        return [{"x": 1}]


def test_a_finished_query_waits_for_a_late_session_until_its_token_expires():
    settings = dataclasses.replace(SETTINGS, session_token_ttl_seconds=1)
    queries, notifications = QuickQueries(), StandInNotifications()
    prefetcher = Prefetcher(settings, "w3", 3, queries, {"slow-query": opening}, notifications)
    (send,) = notifications.handlers.values()

    async def scenario():
        late = await sent(send, token())
        await sent(send, token(seconds=6.0))
        await asyncio.sleep(settings.query_prefetch_seconds + 0.2)  # past the grace period
        taken = prefetcher.take(get_session_id(late), spec_of(late))
        still = prefetcher.waiting  # the second page's session never comes: its result still waits
        await asyncio.sleep(settings.session_token_ttl_seconds)
        return taken, still, prefetcher.waiting
    taken, still, after_token = asyncio.run(scenario())
    assert taken is not None and taken.future.result() == [{"x": 1}]
    assert still == 1 and len(queries.started) == 2  # nothing ran twice
    assert after_token == 0  # no session can come once its token expired: the result goes
