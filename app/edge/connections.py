"""Ending nginx's connections to a lost worker, so its charts notice at once.

A worker that dies closes its sockets, and nginx closes the charts' websockets behind them.
A host cut off (or a stuck process) closes nothing: nginx's upstream sockets to it stay open,
silent, until `proxy_read_timeout` (15 s, nginx/worker_route.template), and old nginx workers
keep such connections across reloads. When the edge drops a worker that did not answer a
probe, it destroys the sockets to that worker with the kernel's sock_destroy (`ss -K`, as
iproute2 does it): nginx sees its upstream connection fail, closes the chart's websocket, and
the page re-embeds the chart on a live worker within about a second instead of 15.

It needs CAP_NET_ADMIN in the edge's network namespace (root, or the compose service's
`cap_add: [NET_ADMIN]`). Without it the sockets stay and nginx's timeout still ends them.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Iterable

from app.edge.liveness import Route

log = logging.getLogger(__name__)

# ss answers at once; a bound so that a wedged netlink never holds the edge's loop.
SS_TIMEOUT_S = 5.0


def end_connections(routes: Iterable[Route]) -> bool:
    """Destroy this namespace's TCP connections to each route's host and port; False if `ss`
    could not (missing, or not permitted: nginx's read timeout remains the fallback)."""
    ss = shutil.which("ss") or shutil.which("ss", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ss is None:
        log.warning("edge: no `ss` (iproute2): a lost worker's websockets end at nginx's read timeout")
        return False
    ok = True
    for name, host, port in routes:
        try:
            done = subprocess.run([ss, "-K", "-t", "dst", host, "dport", "=", f":{port}"],
                                  capture_output=True, text=True, timeout=SS_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("edge: could not end the connections to %s: %s", name, exc)
            ok = False
            continue
        # ss prints what it destroyed (header included); a refusal is "Operation not permitted".
        if "not permitted" in done.stderr:
            log.warning("edge: not permitted to end the connections to %s (needs CAP_NET_ADMIN); "
                        "its websockets end at nginx's read timeout", name)
            ok = False
        else:
            ended = max(0, len(done.stdout.strip().splitlines()) - 1)
            log.info("edge: ended %d connection(s) to %s at %s:%s", ended, name, host, port)
    return ok
