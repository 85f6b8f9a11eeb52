"""Liveness of the routed workers: when to doubt a worker, and how to ask it directly.

The registry's TTL (4 heartbeats) is too slow to drop a lost host and must stay long enough
for a worker paused by a full garbage collection. So the edge asks a worker itself once its
heartbeat is late: a TCP connect, then a HEAD request to its Bokeh server.

- **Unreachable** (refused, no route, or no TCP handshake within `connect_timeout`): the host
  is dead or cut off, or the process is gone. Nothing that merely slows a live worker does
  this (the kernel completes the handshake however busy the process is), so its route goes
  at once.
- **Silent** (connected, but no HTTP answer within `answer_timeout` of the probe's start): the
  process is stuck or stopped, or its Bokeh loop is busy: a burst of new sessions or a full GC can hold it for a
  second or two. So a silent worker gets at least STALL_GRACE_S to answer.
- **Answered**: kept; asked again after `reprobe_after` while its heartbeat stays late, and the
  TTL remains the backstop.
A worker whose heartbeat arrives meanwhile is kept whatever the probe said. Without the
database the edge cannot see heartbeats, so it asks every routed worker, every `offline_every`.

With heartbeat H (REGISTRY_HEARTBEAT_SECONDS), from the worker's last beat: late at 1.1 H; an
unreachable host's routes go by 1.4 H, a silent worker's by 1.1 H + max(0.7 H, 2 s), plus an
nginx reload. The issue's bound is 2 H: it holds for lost hosts at any H, and for a stuck
worker from H = 2.9 s (production: H = 5 s, gone by 9 s); with the tests' H = 1 s a stuck
worker takes up to 3.1 s, the price of not dropping a worker that paused for 2 s.
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
# A TCP handshake on a LAN takes milliseconds, done by the kernel however busy the process:
# 0.3 H is very patient (production: 1.5 s, past the first SYN retransmission at 1 s).
CONNECT_TIMEOUT_FACTOR = 0.3
# A live worker's Bokeh loop may be busy (a burst of sessions) or paused (a full GC) this long.
STALL_GRACE_S = 2.0
# ... or, with a long heartbeat, this share of it (1.1 H + 0.7 H = 1.8 H leaves room for a reload).
ANSWER_TIMEOUT_FACTOR = 0.7
# A late worker that answered is asked again after this much (it may die while late).
REPROBE_FACTOR = 0.5
# Without the database: every routed worker is asked this often.
OFFLINE_PROBE_FACTOR = 0.5
# Probes of one round run at once (a lost host's workers all time out together).
MAX_PARALLEL_PROBES = 32

ANSWERED, UNREACHABLE, SILENT = "answered", "unreachable", "silent"


@dataclass(frozen=True)
class Timing:
    """The detector's periods, all derived from the heartbeat period."""

    heartbeat: float
    late_after: float
    connect_timeout: float
    answer_timeout: float
    reprobe_after: float
    offline_every: float

    @classmethod
    def for_heartbeat(cls, heartbeat: float) -> "Timing":
        return cls(heartbeat, LATE_FACTOR * heartbeat, CONNECT_TIMEOUT_FACTOR * heartbeat,
                   max(ANSWER_TIMEOUT_FACTOR * heartbeat, STALL_GRACE_S),
                   REPROBE_FACTOR * heartbeat, OFFLINE_PROBE_FACTOR * heartbeat)

    @property
    def unreachable_within(self) -> float:
        """Longest time from a host's last beat to its verdict (before the reload)."""
        return self.late_after + self.connect_timeout

    @property
    def silent_within(self) -> float:
        """Longest time from a stuck worker's last beat to its verdict (before the reload)."""
        return self.late_after + self.answer_timeout


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


def split(verdicts: Mapping[Route, str]) -> tuple[list[Route], list[Route]]:
    """(alive, dead) routes from a round of probes."""
    return ([r for r, v in verdicts.items() if v == ANSWERED], [r for r, v in verdicts.items() if v != ANSWERED])


def revived(row: Observed, doubted_at: float) -> bool:
    """Whether the worker beat after `doubted_at` (when a probe began that it did not answer)."""
    return row.read_at - row.age > doubted_at


def siblings(lost: Mapping[Route, str], rows: Iterable[Observed]) -> list[Route]:
    """Routes on the hosts of `lost` routes that were unreachable: the host is likely gone as a
    whole, so its other workers are probed now rather than when their own beats are late."""
    hosts = {route[1] for route, verdict in lost.items() if verdict == UNREACHABLE}
    return [r.route for r in rows if r.route[1] in hosts and r.route not in lost]


def probe(route: Route, timing: Timing) -> str:
    """ANSWERED, UNREACHABLE or SILENT (see the module's docstring).

    A stopped or stuck process still completes the TCP handshake (the kernel does it), so
    only an HTTP status line counts as an answer. HEAD of a static file: a 200 without a
    body, answered by Tornado without touching any session."""
    name, host, port = route
    deadline = time.monotonic() + timing.answer_timeout  # the whole probe, handshake included
    try:
        s = socket.create_connection((host, port), timeout=timing.connect_timeout)
    except OSError:  # refused, unreachable, no handshake in time
        return UNREACHABLE
    try:
        with s:
            s.sendall(f"HEAD /bokeh/{name}/static/js/bokeh.min.js HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while len(head) < 5:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(5 - len(head))
                if not chunk:
                    return UNREACHABLE  # closed without answering: the process is going
                head += chunk
            return ANSWERED if head == b"HTTP/" else SILENT
    except TimeoutError:
        return SILENT
    except OSError:  # reset, or the link went
        return UNREACHABLE


def probe_all(routes: Sequence[Route], timing: Timing,
              check: Callable[[Route, Timing], str] = probe) -> dict[Route, str]:
    """Probe every route at once; route -> verdict."""
    if not routes:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PROBES, len(routes)),
                            thread_name_prefix="probe") as pool:
        return dict(zip(routes, pool.map(lambda r: check(r, timing), routes)))
