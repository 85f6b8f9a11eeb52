"""The master holds the libraries, a worker our code: what hooks.load_code_from_disk leaves.

In a subprocess: forgetting modules in the test process would split the other tests' modules."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from app.serving import hooks
from tests.conftest import ROOT

FORK = textwrap.dedent("""
    import sys
    from app import access, logs, metrics, tokens
    from app.serving import hooks, registry
    before = {name: sys.modules[name] for name in ("app.access", "app.tokens", "app.serving.registry")}
    hooks.load_code_from_disk()
    assert not [m for m in sys.modules if m.startswith("app.serving") or m == "app.access"], sorted(sys.modules)
    import app.logs, app.metrics
    from app import access as access2, logs as logs2
    from app.serving import registry as registry2
    assert access2 is not before["app.access"] and registry2 is not before["app.serving.registry"]
    assert logs2 is logs and app.logs is logs and app.metrics is metrics
    assert sys.modules["app"].logs is logs
    print("ok")
""")


def test_a_forked_worker_reads_our_modules_again_and_keeps_logs_and_metrics():
    out = subprocess.run([sys.executable, "-c", FORK], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_preloading_names_what_failed_and_goes_on(caplog):
    hooks.preload_libraries(("json", "no_such_library_here"))
    assert "could not preload no_such_library_here" in caplog.text and "json" not in caplog.text


def test_the_preloaded_libraries_start_no_thread():
    """Threads do not survive a fork: a library that starts one on import must not be preloaded."""
    code = ("import threading; from app.serving import hooks; hooks.preload_libraries(); "
            "print(len(threading.enumerate()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1", (out.stdout, out.stderr[-2000:])
