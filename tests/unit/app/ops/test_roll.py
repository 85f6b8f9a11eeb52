"""Unit test of the rolling restart's order of steps (app.ops.roll), gunicorn and the registry faked."""
from __future__ import annotations

import signal

from app.ops import roll


def test_each_old_worker_is_retired_after_its_replacement_is_ready_and_the_callback_comes_just_before(monkeypatch):
    procs = {10, 11}
    ready: set[int] = set()
    events: list[str] = []
    spawned = iter([20, 21])

    def kill(pid: int, sig: int) -> None:
        assert pid == 1
        if sig == signal.SIGTTIN:
            new = next(spawned)
            procs.add(new)
            ready.add(new)
            events.append(f"TTIN->{new}")
        else:
            oldest = min(p for p in procs if p < 20)
            procs.discard(oldest)
            events.append(f"TTOU->{oldest}")
    monkeypatch.setattr(roll.os, "kill", kill)
    monkeypatch.setattr(roll, "children", lambda master: set(procs))
    monkeypatch.setattr(roll, "ready_pids", lambda settings: set(ready))
    pairs = roll.roll(1, settings=None, on_retire=lambda: events.append("retire"))
    assert pairs == [(10, 20), (11, 21)]
    assert events == ["TTIN->20", "retire", "TTOU->10", "TTIN->21", "retire", "TTOU->11"]
