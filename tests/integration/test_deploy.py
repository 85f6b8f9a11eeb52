"""A rolling restart deploys the code on disk, also the modules the gunicorn master imported
(its hooks, the settings, the registry, the access rules): the workers read our code again
after the fork (app.serving.hooks.load_code_from_disk)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.ops import prestart, roll
from tests.conftest import ROOT, site_env
from tests.integration.helpers import http_get, wait_until

# Both read by the master on start (gunicorn.conf.py imports app.serving.hooks, which imports
# app.serving.bokeh_server): (file, a line each logs when a worker's Bokeh server starts).
MASTER_LOADED = (("app/serving/hooks.py", "worker %s: Bokeh server %s on %s:%s"),
                 ("app/serving/bokeh_server.py", "Bokeh server %s serving on %s:%s"))


def copy_of_the_site(to: Path) -> Path:
    for package in ("app", "bokeh_apps"):
        shutil.copytree(ROOT / package, to / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("wsgi.py", "gunicorn.conf.py"):
        shutil.copy(ROOT / name, to / name)
    return to


@pytest.fixture
def gunicorn_in_a_copy(own_pg, tmp_path):
    """On a PostgreSQL of its own: the shared one has the session's site's connections, and a
    roll briefly runs one worker more than the site has."""
    tree = copy_of_the_site(tmp_path / "site")
    env = site_env(own_pg.create_database("deploy"), WEB_CONCURRENCY="2", LOG_LEVEL="info",
                   PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), PYTHONPATH=str(tree))
    settings = Settings.from_env(env)
    prestart.run(settings, people_per_team=1, history_days=1)
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        master = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=tree, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(roll.ready_pids(settings) & roll.children(master.pid)) == 2, 60,
                   f"the copy's workers were never ready: {log.read_text(errors='replace')[-3000:]}")
        yield tree, master, settings, log
    finally:
        master.terminate()
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def test_a_rolling_restart_deploys_a_change_to_the_modules_the_master_imported(gunicorn_in_a_copy):
    tree, master, settings, log = gunicorn_in_a_copy
    for path, line in MASTER_LOADED:
        source = (tree / path).read_text()
        assert source.count(f'"{line}"') == 1, f"{path} no longer logs {line!r}: update this test"
        (tree / path).write_text(source.replace(f'"{line}"', f'"deployed: {line}"'))
    before = log.read_text(errors="replace")
    assert "deployed:" not in before

    pairs = roll.roll(master.pid, settings)

    assert len(pairs) == 2
    time.sleep(0.5)  # the last lines reach the file
    after = log.read_text(errors="replace")[len(before):]
    for _path, line in MASTER_LOADED:
        logged = re.compile("deployed: " + re.escape(line).replace(re.escape("%s"), ".+?"))
        assert len([x for x in after.splitlines() if logged.search(x)]) == 2, after[-3000:]
    status, _, _ = http_get(f"http://{settings.gunicorn_bind}/healthz")
    assert status == 200
