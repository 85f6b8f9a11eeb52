"""One LISTEN connection per worker, shared by everything that waits on another worker.

Notifications are a wake-up, never the only way to learn something: whoever waits also
polls at a slow pace, so a notification lost while this connection reconnects costs a
second, not a stuck session.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import asyncpg

log = logging.getLogger(__name__)

RECONNECT_S = 1.0


class Notifications:
    def __init__(self, database_url: str, application_name: str) -> None:
        self.database_url = database_url
        self.application_name = application_name
        self._handlers: dict[str, Callable[[str], None]] = {}
        # Told False when the connection is found lost, True once it listens again.
        self._state_handlers: list[Callable[[bool], None]] = []
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task | None = None
        self._closed = False

    def subscribe(self, channel: str, handler: Callable[[str], None]) -> None:
        """Call handler(payload) on the worker's loop for each NOTIFY on channel (before start())."""
        self._handlers[channel] = handler

    def on_state(self, handler: Callable[[bool], None]) -> None:
        """Call handler(False) when the connection is lost, handler(True) once it listens again
        (after the LISTENs: what was sent in between is for the handler to re-read)."""
        self._state_handlers.append(handler)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _tell(self, connected: bool) -> None:
        for handler in self._state_handlers:
            try:
                handler(connected)
            except Exception:  # one subscriber's bug must not stop the others hearing it
                log.exception("notification state handler failed")

    async def start(self) -> None:
        await self._connect()
        self._watch = asyncio.get_running_loop().create_task(self._keep_connected())

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.database_url,
                                     server_settings={"application_name": self.application_name})
        for channel, handler in self._handlers.items():
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload, h=handler: h(payload))
        # Lost connections are noticed at once, not at the next check.
        conn.add_termination_listener(lambda _c: self._lost())
        self._conn = conn

    def _lost(self) -> None:
        if not self._closed:
            log.warning("notification connection lost")
            self._tell(False)

    async def _keep_connected(self) -> None:
        while not self._closed:
            await asyncio.sleep(RECONNECT_S)
            if self._conn is not None and not self._conn.is_closed():
                continue
            try:
                await self._connect()
                log.info("notification connection re-established")
                self._tell(True)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("notification connection still down: %s", exc)

    async def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        if self._conn is not None:
            self._conn.terminate()
