"""NetnsHost with real namespaces and veth pairs (the tests run as root)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from app.ops import netns
from app.ops.netns import NetnsHost

SERVER = ("import socket, sys, time\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((sys.argv[1], 7000)); s.listen(); print('ready', flush=True)\n"
          "while True:\n"
          "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n")


def connect(address: str, timeout: float = 1.0) -> bytes:
    with socket.create_connection((address, 7000), timeout=timeout) as s:
        return s.recv(5)


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture
def host():
    h = NetnsHost("t").start()
    try:
        yield h
    finally:
        h.stop()


def test_a_server_inside_is_reachable_on_the_hosts_address_until_the_link_is_cut(host):
    server = host.spawn([sys.executable, "-c", SERVER, host.address], stdout=subprocess.PIPE)
    assert server.stdout.readline().strip() == b"ready"
    assert connect(host.address) == b"hello"
    host.cut_link()
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # silently dropped, not refused
        connect(host.address, timeout=0.5)
    assert time.monotonic() - started >= 0.4
    host.restore_link()
    deadline = time.monotonic() + 10
    while True:  # the root side's neighbour entry may need a moment to resolve again
        try:
            assert connect(host.address) == b"hello"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_inside_only_lo_and_the_peer_exist_and_the_gateway_is_the_root_end(host):
    out = subprocess.run(host.command(["ip", "-o", "-4", "addr", "show"]), capture_output=True, text=True).stdout
    assert f"inet {host.address}/30" in out and "inet 127.0.0.1/8" in out
    assert len(out.splitlines()) == 2, out
    root = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", host.veth], capture_output=True, text=True).stdout
    assert f"inet {host.gateway}/30" in root


def test_kill_all_ends_every_process_inside_also_grandchildren(host):
    parent = host.spawn(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    deadline = time.monotonic() + 5
    while len(host.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(host.pids()) == 3, host.pids()
    killed = host.kill_all()
    assert len(killed) == 3
    assert parent.wait(5) == -9
    deadline = time.monotonic() + 5
    while host.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.pids() == []


def test_stop_removes_namespace_and_veth_even_with_processes_running_and_twice():
    h = NetnsHost("s").start()
    h.spawn(["sleep", "300"])
    assert h.name in netns.namespaces() and link_exists(h.veth)
    h.stop()
    h.stop()
    assert h.name not in netns.namespaces()
    assert not link_exists(h.veth)


def test_a_failed_start_leaves_nothing_behind(monkeypatch):
    h = NetnsHost("f")

    def no_network():
        raise netns.NetnsError("no free /30")
    monkeypatch.setattr(h, "_free_network", no_network)
    with pytest.raises(netns.NetnsError):
        h.start()
    assert h.name not in netns.namespaces()
    assert not link_exists(h.veth)


def test_two_hosts_get_distinct_names_and_networks():
    with NetnsHost("a") as a, NetnsHost("a") as b:
        assert a.name != b.name and a.veth != b.veth
        assert not a.network.overlaps(b.network)


def test_namespaces_of_dead_runs_are_removed_and_live_ones_kept():
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = f"{netns.PREFIX}-{dead.pid}-abcdef-x"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    with NetnsHost("k") as live:
        assert orphan not in netns.namespaces()
        assert live.name in netns.namespaces()
        assert live.name not in netns.remove_orphans()


def test_labels_are_checked():
    with pytest.raises(ValueError):
        NetnsHost("Bad label")
