"""Unit tests for app.edge: route rendering and the nginx config, checked by the real `nginx -t`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from app.edge.nginx import NginxServer, render_routes, render_upstreams
from app.ops.launcher import free_port

ROOT = Path(__file__).resolve().parents[4]

HEADER = "# Generated from the worker registry by app/edge.\n"


def test_render_routes_empty():
    text = render_routes([])
    assert text == HEADER
    assert "location" not in text


def test_render_routes_one_block_per_worker():
    text = render_routes([("w1", "127.0.0.1", 5100), ("w2", "10.0.0.7", 5101)])
    assert text.startswith(HEADER)
    assert text.count("location /bokeh/") == 2
    blocks = text[len(HEADER):].split("location /bokeh/")[1:]
    for block, (name, host, port) in zip(blocks, [("w1", "127.0.0.1", 5100), ("w2", "10.0.0.7", 5101)]):
        assert block.startswith(f"{name}/ {{\n")
        assert f"    proxy_pass http://{host}:{port};\n" in block
        assert "    proxy_http_version 1.1;\n" in block
        assert "    proxy_set_header Upgrade $http_upgrade;\n" in block
        assert "    proxy_set_header Connection $connection_upgrade;\n" in block
        assert f"    add_header X-Bokeh-Worker {name} always;\n" in block
        assert block.rstrip().endswith("}")


@pytest.fixture
def nginx_on_path(monkeypatch) -> None:
    if shutil.which("nginx") is None:
        monkeypatch.setenv("PATH", os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (expected /usr/sbin/nginx)")


@pytest.fixture
def run_dir() -> Path:
    """Under /tmp and world-traversable: as root, nginx's workers run as www-data."""
    path = Path(tempfile.mkdtemp(prefix="happiness-unit-edge-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(nginx_on_path, run_dir) -> NginxServer:
    nginx = NginxServer(run_dir, "127.0.0.1:18080", ["127.0.0.1:18000", "127.0.0.1:18001"],
                        access_log="off")
    nginx.render()
    return nginx


def test_render_writes_a_valid_config(server, run_dir):
    conf = (run_dir / "nginx.conf").read_text()
    assert "listen 127.0.0.1:18080;" in conf
    upstreams = (run_dir / "upstreams.conf").read_text()
    assert "server 127.0.0.1:18000;" in upstreams and "server 127.0.0.1:18001;" in upstreams
    assert f"include {run_dir / 'upstreams.conf'};" in conf
    assert f"include {run_dir / 'workers.conf'};" in conf
    assert "access_log off;" in conf
    assert (run_dir / "workers.conf").read_text() == HEADER
    result = server.check()
    assert result.returncode == 0, result.stderr


def test_apply_routes(server, run_dir):
    routes_file = run_dir / "workers.conf"
    assert server.apply_routes([("w1", "127.0.0.1", 5100)]) is True
    text = routes_file.read_text()
    assert text == render_routes([("w1", "127.0.0.1", 5100)])
    assert "location /bokeh/w1/ {" in text and "proxy_pass http://127.0.0.1:5100;" in text
    assert server.check().returncode == 0
    # The same routes again: nothing to do.
    assert server.apply_routes([("w1", "127.0.0.1", 5100)]) is False
    assert routes_file.read_text() == text
    # Back to no routes is a change too.
    assert server.apply_routes([]) is True
    assert routes_file.read_text() == HEADER


def test_render_upstreams_marks_the_down_ones():
    text = render_upstreams(["10.0.0.2:8000", "10.0.0.3:8000"], down=["10.0.0.3:8000"])
    assert text.splitlines()[1:] == ["server 10.0.0.2:8000;", "server 10.0.0.3:8000 down;"]


def test_apply_upstreams_down_and_back(server, run_dir):
    assert server.apply_upstreams_down(["127.0.0.1:18001"]) is True
    assert "server 127.0.0.1:18001 down;" in (run_dir / "upstreams.conf").read_text()
    assert server.check().returncode == 0
    assert server.apply_upstreams_down([]) is True
    assert " down;" not in (run_dir / "upstreams.conf").read_text()


def test_an_upstreams_file_nginx_refuses_is_put_back(server, run_dir):
    before = (run_dir / "upstreams.conf").read_text()
    server.flask_upstreams.append("bad host;{")
    assert server.apply_upstreams_down([]) is False
    assert (run_dir / "upstreams.conf").read_text() == before


@pytest.mark.parametrize("bad", [
    [("w2", "bad host;{", 5101)],
    [("w1", "127.0.0.1", 5100), ("w1", "127.0.0.1", 5101)],  # duplicate location
    [("w2", "127.0.0.1", 99999)],
])
def test_invalid_routes_are_rejected(server, run_dir, bad):
    good = [("w1", "127.0.0.1", 5100)]
    assert server.apply_routes(good) is True
    before = (run_dir / "workers.conf").read_text()
    assert server.apply_routes(bad) is False
    assert (run_dir / "workers.conf").read_text() == before
    assert server.check().returncode == 0
    # The rejected routes did not become the "current" ones: the good routes are still a no-op.
    assert server.apply_routes(good) is False


def test_invalid_routes_rejected_after_restart_on_same_run_dir(nginx_on_path, run_dir):
    first = NginxServer(run_dir, "127.0.0.1:18080", ["127.0.0.1:18000"], access_log="off")
    first.render()
    assert first.apply_routes([("w1", "127.0.0.1", 5100)]) is True
    before = (run_dir / "workers.conf").read_text()
    # A restarted edge reusing EDGE_RUN_DIR renders over the existing files.
    second = NginxServer(run_dir, "127.0.0.1:18080", ["127.0.0.1:18000"], access_log="off")
    second.render()
    assert second.apply_routes([("w2", "bad host;{", 5101)]) is False
    assert (run_dir / "workers.conf").read_text() == before


EDGE_SCRIPT = """
import sys, time
from pathlib import Path
from app.edge.nginx import NginxServer
nginx = NginxServer(Path(sys.argv[1]), "127.0.0.1:" + sys.argv[2], ["127.0.0.1:9"], access_log="off")
nginx.render()
nginx.start()
print(nginx.process.pid, flush=True)
time.sleep(120)
"""


def test_nginx_does_not_outlive_a_killed_edge(nginx_on_path, run_dir):
    """SIGKILL gives the edge no chance to stop nginx; the kernel must (PR_SET_PDEATHSIG)."""
    edge = subprocess.Popen([sys.executable, "-c", EDGE_SCRIPT, str(run_dir), str(free_port())],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    nginx_pid = int(edge.stdout.readline())
    assert pid_alive(nginx_pid)
    edge.kill()
    edge.wait()
    deadline = time.monotonic() + 10
    while pid_alive(nginx_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(nginx_pid), "nginx outlived the edge that started it"


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie is dead, just not reaped
    except FileNotFoundError:
        return False


def test_access_lines_are_json_with_log_format_json(nginx_on_path, run_dir):
    nginx = NginxServer(run_dir, "127.0.0.1:18080", ["127.0.0.1:18000"], access_log="/dev/stdout", json_logs=True)
    nginx.render()
    conf = (run_dir / "nginx.conf").read_text()
    assert "access_log /dev/stdout site_json;" in conf and "escape=json" in conf
    result = nginx.check()
    assert result.returncode == 0, result.stderr
    plain = NginxServer(run_dir, "127.0.0.1:18080", ["127.0.0.1:18000"], access_log="/dev/stdout")
    plain.render()
    assert "access_log /dev/stdout site;" in (run_dir / "nginx.conf").read_text()
