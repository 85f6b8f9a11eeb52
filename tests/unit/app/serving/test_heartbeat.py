"""The heartbeat: the figures it stores for the admin console, and re-registering (real PostgreSQL)."""
from __future__ import annotations

import asyncio
import json

import psycopg2

from app.config import Settings
from app.serving.heartbeat import Heartbeat, WorkerFigures, rss_bytes
from app.serving.registry import Reservation


def test_live_updates_per_second_come_from_two_beats():
    clock = iter([100.0, 102.0, 103.0])
    updates = iter([10, 30, 30])
    figures = WorkerFigures(lambda: {"live_updates": next(updates), "queries_running": 1},
                            clock=lambda: next(clock), memory=lambda: 1234)
    first = json.loads(figures.json())
    assert first["live_updates_per_s"] is None and first["rss_bytes"] == 1234 and first["queries_running"] == 1
    assert json.loads(figures.json())["live_updates_per_s"] == 10.0
    assert json.loads(figures.json())["live_updates_per_s"] == 0.0


def test_figures_that_cannot_be_read_skip_one_beat():
    def broken():
        raise RuntimeError("dictionary changed size during iteration")
    assert WorkerFigures(broken).json() is None


def test_this_process_has_a_resident_size():
    assert rss_bytes() > 10 * 2**20


def test_a_reclaimed_worker_registers_again_and_is_ready_only_at_its_next_beat(database_url):
    """Between the two beats the edge routes it (the INSERT notifies); ready at once, Flask
    could send a page to a worker nginx does not route yet."""
    settings = Settings(database_url=database_url, registry_heartbeat_seconds=1.0)
    reservation = Reservation(worker_id=7, host="10.0.0.9", port=5107, pid=4321)
    heartbeat = Heartbeat(settings, reservation, count_sessions=lambda: 0, sessions_created=lambda: 0)

    def row():
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT host, port, ready_at IS NOT NULL FROM bokeh_workers WHERE id = 7")
            return cur.fetchone()

    async def beats() -> list:
        try:
            seen = []
            for _ in range(2):
                await heartbeat.beat()
                seen.append(await asyncio.to_thread(row))
            return seen
        finally:
            heartbeat._drop()
    # No row: the edge reclaimed it.
    assert asyncio.run(beats()) == [("10.0.0.9", 5107, False), ("10.0.0.9", 5107, True)]
