"""A stand-in app host on one machine: a Linux network namespace with its own address,
joined to the root namespace by a veth pair (needs root and `ip` from iproute2).

    host = NetnsHost("a").start()          # namespace + veth, 10.x.y.z/30 on each end
    proc = host.spawn(["gunicorn", ...])   # runs inside: it sees only lo and its veth
    host.address                           # the host's own address (bind here)
    host.gateway                           # the root namespace's end (reach the root's services here)
    host.cut_link(); host.restore_link()   # a silent network cut: packets dropped, no RST
    host.kill_all()                        # SIGKILL every process inside (a host that died)
    host.stop()                            # kill, delete the namespace and the veth; safe to repeat

Used by the multi-host tests and the fault drill. Names carry the creating process id, so
parallel runs never collide, and `start()` deletes namespaces left by runs that died.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import random
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

PREFIX = "hp"
# Addresses come from a private /16 nothing here routes; one /30 per host (2 usable addresses).
POOL = ipaddress.ip_network("10.213.0.0/16")
# Choosing a free /30 and assigning it is one step across processes (parallel test runs).
LOCK_FILE = Path("/run/lock/happiness-netns.lock")
# After SIGKILL the kernel frees a namespace's processes quickly; this bounds a stuck wait.
KILL_WAIT_S = 5.0
_NAME = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-")


class NetnsError(RuntimeError):
    """An `ip` command failed (not root, no iproute2, or the kernel refused)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    """Names of every network namespace on the machine (`ip netns list`)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def remove_orphans() -> list[str]:
    """Delete namespaces this module made for processes that are gone (a killed test run)."""
    removed = []
    for name in namespaces():
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _kill_pids(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _netns_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def _kill_pids(name: str, sig: int = signal.SIGKILL) -> list[int]:
    pids = _netns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _ip("-4", "-o", "addr", "show").stdout
    return [ipaddress.ip_interface(m).network for m in re.findall(r"inet (\S+)", out)]


class NetnsHost:
    """One namespace-backed host. Not thread-safe; start() once, stop() any number of times."""

    def __init__(self, label: str = "host") -> None:
        if not re.fullmatch(r"[a-z0-9]{1,8}", label):
            raise ValueError("label: 1-8 lower-case letters or digits")
        token = secrets.token_hex(3)
        self.label = label
        self.name = f"{PREFIX}-{os.getpid()}-{token}-{label}"
        # Interface names are at most 15 characters; this one lives in the root namespace.
        self.veth = f"{PREFIX}{token}{label}"[:15]
        self.peer = "eth0"  # inside the namespace, so it never collides
        self.address = ""
        self.gateway = ""
        self.network: ipaddress.IPv4Network | None = None
        self._processes: list[subprocess.Popen] = []
        self._started = False

    # lifecycle -----------------------------------------------------------------
    def start(self) -> "NetnsHost":
        """Create the namespace and the veth pair, address both ends, bring them and lo up."""
        remove_orphans()
        self._started = True
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer, "netns", self.name)
            LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
            with open(LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.network = self._free_network()
                gateway, address = list(self.network.hosts())
                self.gateway, self.address = str(gateway), str(address)
                _ip("addr", "add", f"{self.gateway}/30", "dev", self.veth)
            _ip("link", "set", self.veth, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.peer)
            _ip("-n", self.name, "link", "set", self.peer, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.stop()
            raise
        log.info("netns: %s up, %s (gateway %s)", self.name, self.address, self.gateway)
        return self

    def stop(self) -> None:
        """Kill every process inside, delete the namespace and the veth. Never raises."""
        if not self._started:
            return
        try:
            self.kill_all()
            deadline = time.monotonic() + KILL_WAIT_S
            while _netns_pids(self.name) and time.monotonic() < deadline:
                time.sleep(0.05)
            for proc in self._processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(KILL_WAIT_S)
            _ip("netns", "del", self.name, check=False)
            # Deleting the namespace destroys the pair once its last process is gone; be explicit.
            _ip("link", "del", self.veth, check=False)
        except Exception:  # teardown after a failure must not hide that failure
            log.exception("netns: cleaning up %s failed", self.name)
        self._started = False

    def __enter__(self) -> "NetnsHost":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # processes -----------------------------------------------------------------
    def command(self, args: Sequence[str]) -> list[str]:
        """`args` as a command line that runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None, **popen) -> subprocess.Popen:
        """Start `args` inside the namespace in a new session (`ip netns exec` execs it: same pid)."""
        popen.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(args), env=dict(env) if env is not None else None, **popen)
        self._processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process running in the namespace (also those its children started)."""
        return _netns_pids(self.name)

    def kill_all(self, sig: int = signal.SIGKILL) -> list[int]:
        """Send `sig` to every process in the namespace (SIGKILL: the host died); their pids.

        SIGKILL freezes them all first (SIGSTOP), so none sees another die: a gunicorn master
        must not run its child_exit cleanup for a worker killed a moment before it."""
        if sig == signal.SIGKILL:
            _kill_pids(self.name, signal.SIGSTOP)
        pids = _kill_pids(self.name, sig)
        for proc in self._processes:  # reap, so none stays a zombie of ours
            with contextlib.suppress(subprocess.TimeoutExpired):
                if sig == signal.SIGKILL:
                    proc.wait(KILL_WAIT_S)
        return pids

    # the link ------------------------------------------------------------------
    def cut_link(self) -> None:
        """Take the host's end of the pair down: the root side keeps its route and sends into
        a link without carrier, so packets vanish silently (connects time out, open connections
        hang), as when a host's network dies; inside, sends fail at once."""
        _ip("-n", self.name, "link", "set", self.peer, "down")

    def restore_link(self) -> None:
        _ip("-n", self.name, "link", "set", self.peer, "up")

    def _free_network(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        candidates = list(POOL.subnets(new_prefix=30))
        for _ in range(200):
            net = random.choice(candidates)
            if not any(net.overlaps(u) for u in used):
                return net
        raise NetnsError(f"no free /30 in {POOL}")
