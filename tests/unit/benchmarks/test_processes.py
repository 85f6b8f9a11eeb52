"""CPU accounting by process class (benchmarks.processes), on a made-up process table."""
from __future__ import annotations

import os

from benchmarks.processes import Proc, cpu_by_class, descendants, difference, find, read_table

# 1 master (2 workers, one of which reaped a child), 10 postmaster (a backend, reaped backends).
TABLE = {
    1: Proc(0, 1.0, 5.0, "python -m gunicorn"),
    2: Proc(1, 10.0, 0.0, "gunicorn worker"),
    3: Proc(1, 20.0, 0.5, "gunicorn worker"),
    10: Proc(0, 2.0, 7.0, "postgres -D /tmp/x/data"),
    11: Proc(10, 3.0, 0.0, "postgres: backend"),
    20: Proc(0, 100.0, 0.0, "someone else"),
}


def test_classes_count_their_tree_and_what_it_reaped_once():
    cpu = cpu_by_class(TABLE, [("workers", 1, "below"), ("master", 1, "self"), ("postgres", 10, "tree"),
                               ("gone", 99, "tree"), ("unknown", None, "tree")])
    # workers: their own 30 + the one reaped 0.5 + what the master reaped (dead workers) 5
    assert cpu == {"workers": 35.5, "master": 1.0, "postgres": 12.0}
    assert sorted(descendants(TABLE, 1)) == [2, 3]
    assert find(TABLE, "/tmp/x/data") == 10 and find(TABLE, "nothing") is None


def test_differences_are_milliseconds_per_session():
    assert difference({"workers": 1.0, "postgres": 2.0}, {"workers": 3.0, "postgres": 2.5}, 100) == \
        {"workers": 20.0, "postgres": 5.0}
    assert difference({}, {"workers": 1.0}, 0) == {}


def test_this_process_is_in_the_real_table():
    table = read_table()
    me = table[os.getpid()]
    assert me.ppid == os.getppid() and me.own_s >= 0 and "python" in me.cmdline


def test_worker_threads_split_by_role_and_the_rest_is_other():
    from benchmarks.processes import worker_threads
    named = {"bokeh-w": "Bokeh loop", "db-w": "database loop"}
    by_pid = {2: {"bokeh-w1": 6.0, "db-w1": 1.5, "python": 2.0}, 3: {"bokeh-w2": 12.0, "db-w2": 3.0}}
    split = worker_threads(TABLE, [2, 3, 99], named, read=lambda pid: by_pid[pid])
    # pid 2: own 10 = 6 + 1.5 + 2.5 other; pid 3: own 20 = 12 + 3 + 5 other (ended threads, say)
    assert split == {"Bokeh loop": 18.0, "database loop": 4.5, "other threads": 7.5}


def test_threads_reads_this_process():
    import threading

    from benchmarks.processes import threads
    from bokeh_apps.kit.runtime import name_os_thread
    done = threading.Event()

    def spin():
        name_os_thread("bench-probe")
        done.wait(5)
    t = threading.Thread(target=spin)
    t.start()
    try:
        import time
        time.sleep(0.1)
        assert "bench-probe" in threads(os.getpid())
    finally:
        done.set()
        t.join()
