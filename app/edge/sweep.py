"""The host sweep: is each app host still reachable from the edge, asked twice a second.

The heartbeat (app/edge/liveness.py) notices a lost host only once its beat is late, 1.1 x
REGISTRY_HEARTBEAT_SECONDS after the last one (5.5 s in production), and its open charts wait
that long. The sweep asks the hosts themselves instead: every SWEEP_EVERY_S it opens (and at
once closes) a TCP connection to every endpoint the edge sends traffic to, the workers' Bokeh
servers and the hosts' gunicorns (FLASK_UPSTREAMS). The kernel of a live host completes the
handshake however busy its processes are.

A host is lost when **none** of its endpoints connects within CONNECT_TIMEOUT_S: cut off, or
down. One endpoint failing alone says nothing about its host (a listen queue that overflowed
during a burst drops SYNs; a worker being replaced refuses for a moment), so it is left to the
heartbeat path; a host with one endpoint is judged on that one. A lost host's workers lose
their routes, and its gunicorn is marked `down` for nginx, so that no page and no re-embed
waits 3 s (proxy_connect_timeout) to find out; the host is marked in edge_lost_hosts, so that
Flask chooses none of its workers even if they still beat (migration 0012). It is routed
again once the sweep reaches it.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Sequence

Endpoint = tuple[str, int]  # (host, port)

# Twice a second: with the timeout below a cut host is found 1.1-1.6 s after the cut.
SWEEP_EVERY_S = 0.5
# Past the first SYN retransmission (1 s on Linux), plus a LAN round trip: one lost SYN does
# not make a host lost, and nothing that only slows a process delays the handshake.
CONNECT_TIMEOUT_S = 1.1
MAX_PARALLEL = 64


def parse_endpoint(text: str) -> Endpoint:
    """'10.0.0.2:8000' -> ('10.0.0.2', 8000); FLASK_UPSTREAMS entries, as nginx takes them."""
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {text!r}")
    return host.strip("[]"), int(port)


def connects(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP handshake with `endpoint` completes within `timeout`."""
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            return True
    except OSError:  # refused, unreachable, or no handshake in time
        return False


def lost_hosts(answers: Mapping[Endpoint, bool]) -> set[str]:
    """Hosts none of whose endpoints connected."""
    hosts: dict[str, bool] = {}
    for (host, _port), ok in answers.items():
        hosts[host] = hosts.get(host, False) or ok
    return {host for host, ok in hosts.items() if not ok}


def sweep(endpoints: Iterable[Endpoint], timeout: float = CONNECT_TIMEOUT_S) -> dict[Endpoint, bool]:
    """Try every endpoint at once; endpoint -> whether it connected."""
    endpoints = sorted(set(endpoints))
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(endpoints)), thread_name_prefix="sweep") as pool:
        return dict(zip(endpoints, pool.map(lambda e: connects(e, timeout), endpoints)))


class Sweeper:
    """Sweeps on its own thread, so that a cut host's 1.1 s of silence never holds the
    watcher's loop; the watcher selects on `fileno()` and takes each round with `take()`."""

    def __init__(self, sweep_all: Callable[[Sequence[Endpoint]], dict[Endpoint, bool]] = sweep,
                 every: float = SWEEP_EVERY_S) -> None:
        self.sweep_all = sweep_all
        self.every = every
        self._endpoints: tuple[Endpoint, ...] = ()
        # Only the latest round matters (it supersedes the earlier ones), so only it is kept:
        # nothing piles up while the watcher is away (reconnecting to the database).
        self._latest: tuple[float, dict[Endpoint, bool]] | None = None
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-sweep", daemon=True)

    def watch(self, endpoints: Iterable[Endpoint]) -> None:
        """The endpoints of the next rounds (a tuple swap: no lock needed)."""
        self._endpoints = tuple(sorted(set(endpoints)))

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CONNECT_TIMEOUT_S + self.every + 1)
        self._wake_r.close()
        self._wake_w.close()

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def take(self) -> tuple[float, dict[Endpoint, bool]] | None:
        """The latest round finished since the last take, as (time.monotonic() at its end,
        answers); None if there was none."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            endpoints = self._endpoints
            if endpoints:
                answers = self.sweep_all(endpoints)
                with self._lock:
                    self._latest = (time.monotonic(), answers)
                with contextlib.suppress(OSError):  # full: the watcher has a wake-up pending anyway
                    self._wake_w.send(b"\0")
            self._stop.wait(max(0.0, began + self.every - time.monotonic()))
