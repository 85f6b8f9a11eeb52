"""Liveness of the routed workers: when to doubt a worker, and how to ask it directly.

The registry's TTL (4 heartbeats) is too slow to drop a lost host and must stay long enough
for a worker paused by a full garbage collection. So the edge asks a worker itself once its
heartbeat is late: a TCP connect plus a HEAD request to its Bokeh server, under a short
timeout. No answer (refused, unreachable, timed out: host dead, link cut, process stuck or
stopped) removes its route at once; an answer keeps it, and the TTL stays the backstop.
Without the database the edge cannot see heartbeats, so it asks every routed worker.

With heartbeat H (REGISTRY_HEARTBEAT_SECONDS): a worker is late at 1.1 H after its last
beat, the probe gives it 0.4 H to answer, so a lost host's routes go within 1.5 H plus a
reload (the issue's bound is 2 H). A paused worker survives as long as a pause that began
just before a beat stays under 0.5 H and one that began right after it under 1.5 H: with
the production H = 5 s, pauses of 2.5-7.5 s, well above the second or two of a full GC.
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

Route = tuple[str, str, int]  # (worker name, host, port): what nginx routes

# Beats come every H plus the beat's own round trip: 10% slack before a beat counts as late.
LATE_FACTOR = 1.1
# Long enough for a busy worker's loop to answer a HEAD, short enough for 1.5 H in all.
PROBE_TIMEOUT_FACTOR = 0.4
# A late worker that answered is asked again after this much (it may die while late).
REPROBE_FACTOR = 0.5
# Without the database: every routed worker is asked this often.
OFFLINE_PROBE_FACTOR = 0.5
# Probes of one round run at once (a lost host's workers all time out together).
MAX_PARALLEL_PROBES = 32


@dataclass(frozen=True)
class Timing:
    """The detector's periods, all derived from the heartbeat period."""

    heartbeat: float
    late_after: float
    probe_timeout: float
    reprobe_after: float
    offline_every: float

    @classmethod
    def for_heartbeat(cls, heartbeat: float) -> "Timing":
        return cls(heartbeat, LATE_FACTOR * heartbeat, PROBE_TIMEOUT_FACTOR * heartbeat,
                   REPROBE_FACTOR * heartbeat, OFFLINE_PROBE_FACTOR * heartbeat)


@dataclass(frozen=True)
class Observed:
    """A registry row as the edge read it: its route, its heartbeat's age then, and whether
    its Bokeh server serves yet (one that is still starting cannot answer a probe)."""

    route: Route
    age: float
    ready: bool
    read_at: float  # time.monotonic() of the read

    def age_at(self, now: float) -> float:
        return self.age + (now - self.read_at)


def due(rows: Iterable[Observed], now: float, timing: Timing, answered_until: Mapping[str, float]) -> list[Route]:
    """Routes to probe now: ready workers whose heartbeat is late, unless they answered a
    probe less than `reprobe_after` ago (`answered_until[name]` is when to ask again)."""
    return [r.route for r in rows
            if r.ready and r.age_at(now) > timing.late_after and answered_until.get(r.route[0], 0.0) <= now]


def stale(rows: Iterable[Observed], now: float, timing: Timing, answered_until: Mapping[str, float]) -> bool:
    """Whether the registry must be read again: a worker is due, or one still starting was
    last read a heartbeat ago (its first beat marks it ready, and beats notify nobody)."""
    rows = list(rows)
    return bool(due(rows, now, timing, answered_until)) or any(
        not r.ready and now - r.read_at >= timing.heartbeat for r in rows)


def next_check_in(rows: Iterable[Observed], now: float, timing: Timing, answered_until: Mapping[str, float],
                  ceiling: float) -> float:
    """Seconds until the registry is `stale` (0 if it is), at most `ceiling`."""
    waits = [max(timing.late_after - r.age_at(now), answered_until.get(r.route[0], 0.0) - now) if r.ready
             else timing.heartbeat - (now - r.read_at) for r in rows]
    return max(0.0, min([ceiling, *waits]))


def split(results: Mapping[Route, bool]) -> tuple[list[Route], list[Route]]:
    """(alive, dead) routes from a round of probes."""
    return [r for r, ok in results.items() if ok], [r for r, ok in results.items() if not ok]


def probe(route: Route, timeout: float) -> bool:
    """True when the worker's Bokeh server answers an HTTP request within `timeout`.

    A stopped or stuck process still completes the TCP handshake (the kernel does it), so
    only an HTTP status line counts. HEAD of a static file: a 200 without a body or a log
    warning, answered by Tornado without touching any session."""
    name, host, port = route
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            s.sendall(f"HEAD /bokeh/{name}/static/js/bokeh.min.js HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while len(head) < 5:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(5 - len(head))
                if not chunk:
                    return False
                head += chunk
            return head == b"HTTP/"
    except OSError:  # refused, unreachable, timed out, reset
        return False


def probe_all(routes: Sequence[Route], timeout: float,
              check: Callable[[Route, float], bool] = probe) -> dict[Route, bool]:
    """Probe every route at once; route -> answered."""
    if not routes:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PROBES, len(routes)),
                            thread_name_prefix="probe") as pool:
        return dict(zip(routes, pool.map(lambda r: check(r, timeout), routes)))
