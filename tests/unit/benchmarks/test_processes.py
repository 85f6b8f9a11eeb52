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
