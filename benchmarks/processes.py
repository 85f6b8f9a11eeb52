"""CPU seconds by process class (workers, gunicorn master, edge, nginx, PostgreSQL, the tester),
read from /proc before and after a scenario, so that `make bench` can say what one session
cost each part of the site.

A process's CPU is its utime + stime; children it has reaped add their cutime + cstime to
it (PostgreSQL's backends that ended, reaped by the postmaster, nginx workers by the
master), so a class counts every process of its tree, dead ones included, exactly once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    ppid: int
    own_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: children that ended and were waited for
    cmdline: str = ""


def read_table(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """Every process of the machine; processes that end while read are skipped."""
    table = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # After "pid (comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 1-based from state.
        table[int(entry.name)] = Proc(int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK,
                                      (int(fields[13]) + int(fields[14])) / CLK_TCK, cmdline)
    return table


def descendants(table: Mapping[int, Proc], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    out, stack = [], list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def find(table: Mapping[int, Proc], needle: str) -> int | None:
    """The oldest-numbered process whose command line holds `needle` (a postmaster by its data dir)."""
    found = sorted(pid for pid, p in table.items() if needle in p.cmdline)
    return found[0] if found else None


def cpu_by_class(table: Mapping[int, Proc], classes: Iterable[tuple[str, int | None, str]]) -> dict[str, float]:
    """CPU seconds per class. Each class is (name, root pid, part): part "self" counts the root
    alone, "below" its descendants (with what they reaped, and what the root reaped of them),
    "tree" both."""
    out: dict[str, float] = {}
    for name, root, part in classes:
        if root is None or root not in table:
            continue
        total = 0.0
        if part in ("self", "tree"):
            total += table[root].own_s
        if part in ("below", "tree"):
            total += table[root].reaped_s + sum(table[pid].own_s + table[pid].reaped_s
                                                for pid in descendants(table, root))
        out[name] = out.get(name, 0.0) + total
    return out


def difference(before: Mapping[str, float], after: Mapping[str, float], per: int) -> dict[str, float]:
    """Milliseconds per unit (session) each class spent between the two readings."""
    if per <= 0:
        return {}
    return {name: round((after[name] - before.get(name, 0.0)) * 1000 / per, 2) for name in after}


def rss_kb(pids: Iterable[int]) -> dict[int, int]:
    """Resident set size (VmRSS, kB) of each process still alive."""
    out = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[pid] = int(line.split()[1])
                    break
        except OSError:
            continue
    return out


def threads(pid: int, proc: Path = Path("/proc")) -> dict[str, float]:
    """CPU seconds of a process's threads by kernel name (comm); threads that ended count in
    the process's total only, so callers take the rest as "other"."""
    out: dict[str, float] = {}
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def worker_threads(table: Mapping[int, Proc], pids: Iterable[int], named: Mapping[str, str],
                   read=threads) -> dict[str, float]:
    """The workers' CPU by role of thread: `named` maps a thread-name prefix to a role; what
    no prefix names (Flask's threads, gunicorn's own, ended threads) is "other threads"."""
    out = {role: 0.0 for role in named.values()}
    out["other threads"] = 0.0
    for pid in pids:
        if pid not in table:
            continue
        named_s = 0.0
        for name, seconds in read(pid).items():
            role = next((r for prefix, r in named.items() if name.startswith(prefix)), None)
            if role is not None:
                out[role] += seconds
                named_s += seconds
        out["other threads"] += table[pid].own_s - named_s
    return out
