"""Login throttling: after too many failed logins for one account, or from one address, within
a window, further attempts are refused (429) until the window has passed.

Failures are rows in PostgreSQL (migration 0005), so every worker of every host counts the
same attempts; a guesser cannot spread over workers to multiply the limit.
"""
from __future__ import annotations

import math
import random

from sqlalchemy import Connection, text

from app.config import Settings

# Old rows are swept now and then by a failing login, not by a job of its own.
SWEEP_CHANCE = 0.05

_COUNTS = text("""
    SELECT count(*) FILTER (WHERE username = :username) AS by_account,
           count(*) FILTER (WHERE address = :address) AS by_address,
           extract(epoch FROM min(at) + make_interval(secs => :window) - now()) AS oldest_expires_in
    FROM login_failures
    WHERE (username = :username OR address = :address) AND at > now() - make_interval(secs => :window)
""")


def retry_after(conn: Connection, settings: Settings, username: str, address: str) -> int | None:
    """Seconds until this account and address may try again, or None if they may now."""
    row = conn.execute(_COUNTS, {"username": username, "address": address,
                                 "window": settings.login_window_seconds}).one()
    if row.by_account >= settings.login_failures_per_account or row.by_address >= settings.login_failures_per_address:
        return max(1, math.ceil(row.oldest_expires_in or 1))
    return None


def record_failure(conn: Connection, settings: Settings, username: str, address: str) -> None:
    conn.execute(text("INSERT INTO login_failures (username, address) VALUES (:username, :address)"),
                 {"username": username, "address": address})
    if random.random() < SWEEP_CHANCE:
        conn.execute(text("DELETE FROM login_failures WHERE at < now() - make_interval(secs => :window)"),
                     {"window": settings.login_window_seconds})


def forget_account(conn: Connection, username: str) -> None:
    """A successful login clears its account's failures (not its address's)."""
    conn.execute(text("DELETE FROM login_failures WHERE username = :username"), {"username": username})
