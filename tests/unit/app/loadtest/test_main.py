"""Unit tests for the load tester's pure parts: arguments, schedule, parameters, errors, statistics, reports."""
from __future__ import annotations

import io

import pytest

from app.loadtest.__main__ import LineProgress, ProgressPrinter, config_from_args, main, render_progress, run_parser
from app.loadtest.runner import (
    LoadConfig,
    Progress,
)

URL = "http://127.0.0.1:8080"


# -- arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--url", "ftp://example.org"], "http:// or https://"),
    (["--url", "example.org"], "http:// or https://"),
    (["--url", URL, "--users", "0"], "--users: must be >= 1"),
    (["--url", URL, "--sessions", "0"], "--sessions: must be >= 1"),
    (["--url", URL, "--ramp", "-1"], "--ramp: must be >= 0"),
    (["--url", URL, "--seconds", "-0.5"], "--seconds: must be >= 0"),
    (["--url", URL, "--seconds", "nan"], "--seconds: must be >= 0"),
    (["--url", URL, "--users", "two"], "not a whole number"),
    (["--url", URL, "--timeout", "0"], "--timeout: must be > 0"),
    (["--url", URL, "--duration", "0"], "--duration: must be > 0"),
    (["--url", URL, "--sessions", "5", "--duration", "5"], "not allowed with argument"),
    (["--url", URL, "--param", "days"], "key=value"),
    (["--url", URL, "--json", "/nonexistent-dir/x.json"], "does not exist"),
    (["--users", "3"], "--url"),
])
def test_bad_arguments_exit_2_with_a_reason(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run_parser().parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_main_routes_run_and_accounts_subcommands(capsys):
    for argv in (["--url", "ftp://x"], ["run", "--url", "ftp://x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "http:// or https://" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["accounts", "--count", "0"])
    assert exc.value.code == 2 and "--count: must be >= 1" in capsys.readouterr().err


def test_arguments_make_a_config():
    args = run_parser().parse_args(["--url", URL + "/", "--users", "3", "--sessions", "12", "--ramp", "1.5",
                                    "--param", "days=30", "--param", "x=a=b", "--identical", "--password", "pw"])
    config = config_from_args(args)
    assert config == LoadConfig(url=URL, users=3, password="pw", sessions=12, ramp=1.5, identical=True,
                                params=(("days", "30"), ("x", "a=b")))
    assert config.active_users == 3
    assert LoadConfig(url=URL, users=20, sessions=5).active_users == 5
    assert LoadConfig(url=URL, users=20, duration=10).active_users == 20


def test_progress_line():
    p = Progress(planned=200, duration=None, elapsed_s=3, started=120, charts=95, errors=2, times=[5.2, 5.0, 6.1])
    assert render_progress(p, width=10) == "[######....] 120/200 started, 95 charts, 2 errors, p50 5.2 s"
    loop = Progress(planned=None, duration=60, elapsed_s=15, started=7)
    assert render_progress(loop, width=4) == "[#...] 15/60 s, 7 started, 0 charts, 0 errors"




class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal_and_ends_it():
    screen = Terminal()
    printer = ProgressPrinter(screen)
    printer.note("logging in 3 users ...")
    for started in (50, 120):
        printer(Progress(planned=200, duration=None, elapsed_s=1, started=started, charts=3, errors=0))
    printer(Progress(planned=200, duration=None, elapsed_s=9, started=200, charts=200, errors=0, finished=True))
    out = screen.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, redrawn with carriage returns
    assert "\rlogging in 3 users ..." in out and "\r[" + "#" * 24 + "] 200/200 started, 200 charts, 0 errors" in out


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds(monkeypatch):
    log = io.StringIO()
    clock = iter([100.0, 101.0, 106.0, 107.0])
    monkeypatch.setattr("app.loadtest.__main__.time.monotonic", lambda: next(clock))
    printer = ProgressPrinter(log)
    printer.note("logging in")  # transient: nothing in a log
    for started, finished in ((10, False), (20, False), (30, False), (40, True)):
        printer(Progress(planned=40, duration=None, elapsed_s=1, started=started, finished=finished))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and [line.split("] ")[1].split(",")[0] for line in lines] == \
        ["10/40 started", "30/40 started", "40/40 started"]


def test_live_status_lines_on_a_terminal_and_off():
    screen = Terminal()
    status = LineProgress(screen)
    status("opening: 3/400 sessions")
    status("writing: 10/300 entries")
    status.done()
    assert screen.getvalue().count("\n") == 1 and "\rwriting: 10/300 entries" in screen.getvalue()
    log = io.StringIO()
    status = LineProgress(log)
    status("opening: 3/400 sessions")
    status("opening: 4/400 sessions")  # same phase, too soon: not written
    status("writing: 10/300 entries")
    status.done()
    assert log.getvalue() == "opening: 3/400 sessions\nwriting: 10/300 entries\n"
