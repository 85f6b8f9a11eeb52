"""python -m app.loadtest: run a load (the default, or `run`), create accounts (`accounts`), or
time live updates (`live`).

Exit status: 0 when the run completed (failed sessions are results, counted in the summary),
1 when it could not start or the accounts could not be made, 2 for bad arguments, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from app.config import ConfigError, Settings
from app.loadtest.accounts import (
    DEFAULT_PREFIX,
    DEFAULT_QUERY_LIMIT,
    DEV_LOADTEST_PASSWORD,
    ROLES,
    AccountError,
    resolve_password,
    sync_accounts,
)
from app.loadtest.live import (
    DEFAULT_MIX,
    GRACE_S,
    OPEN_CONCURRENCY,
    POLL_S,
    LiveConfig,
    format_live,
    parse_mix,
    run_live,
    summarize_live,
)
from app.loadtest.report import format_text, percentile, summarize, write_html, write_json
from app.loadtest.runner import SLOW_DASHBOARDS, LoadConfig, LoadTestError, Progress, run_load

PROG = "python -m app.loadtest"
# Off a terminal (logs, CI) a progress line every 5 s: a 60 s run in a dozen lines, not 120.
PLAIN_INTERVAL = 5.0

RUN_EPILOG = f"""\
Create the accounts first: {PROG} accounts --count N (same DATABASE_URL as the site).
Each session: GET /dashboards/NAME, autoload.js, websocket + document pull, then patches until
the chart's query status is final; time to chart is measured from the page request.
Exit status: 0 run completed (session failures are counted, not fatal), 1 cannot start, 2 bad arguments.
"""


def _at_least(kind: type, low: float, strict: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if value < low or (strict and value == low) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        return value
    return parse


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must look like key=value, got {text!r}")
    return key.strip(), value


def _output(text: str) -> Path:
    path = Path(text)
    if not path.parent.is_dir():  # fail now, not after a long run
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Drive concurrent dashboard sessions against a running "
                                "site as browsers do, and report time to chart.", epilog=RUN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", type=_url, required=True, help="the site's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--users", type=_at_least(int, 1), default=20,
                   help="load-test accounts to log in as; sessions use them round-robin (default 20)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"account name prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--password", default=os.environ.get("LOADTEST_PASSWORD") or DEV_LOADTEST_PASSWORD,
                   help="the accounts' password (default: $LOADTEST_PASSWORD, else the dev-only default)")
    p.add_argument("--dashboard", default="slow-query", help="dashboard to open (default slow-query)")
    p.add_argument("--seconds", type=_at_least(float, 0), default=5.0,
                   help="slow-query's query duration, sent as ?seconds= (default 5; slow-query dashboards only)")
    p.add_argument("--ramp", type=_at_least(float, 0), default=0.0,
                   help="spread session starts uniformly over this many seconds; 0 = all at once (default)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sessions", type=_at_least(int, 1), default=100, help="total sessions (default 100)")
    mode.add_argument("--duration", type=_at_least(float, 0, strict=True),
                      help="closed loop instead: each user opens a session, waits for the chart, closes it and "
                           "repeats until this many seconds have passed")
    p.add_argument("--identical", action="store_true",
                   help="every session asks for the identical query; by default each gets its own ?variant= "
                        f"so no two queries are alike ({', '.join(SLOW_DASHBOARDS)} only; other dashboards "
                        "have no variant and always get the same parameters)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="extra dashboard parameter (repeatable), e.g. --param days=30")
    p.add_argument("--timeout", type=_at_least(float, 0, strict=True), default=120.0,
                   help="seconds a session may take from page request to chart (default 120)")
    p.add_argument("--json", type=_output, metavar="PATH", help="write the summary and every session as JSON")
    p.add_argument("--html", type=_output, metavar="PATH", help="write a self-contained HTML report with plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def accounts_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} accounts",
        description="Create or update the load-test accounts <prefix>-001 ... <prefix>-NNN in the database at "
                    "$DATABASE_URL, with the password $LOADTEST_PASSWORD (dev/demo/test: defaults to "
                    f"{DEV_LOADTEST_PASSWORD!r}; elsewhere required, at least 12 characters).")
    p.add_argument("--count", type=_at_least(int, 1), required=True, help="how many accounts")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"account name prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--query-limit", type=_at_least(int, 1), default=DEFAULT_QUERY_LIMIT,
                   help=f"concurrent long queries each account may run (1-10000, default {DEFAULT_QUERY_LIMIT})")
    p.add_argument("--role", choices=ROLES, default=None,
                   help="role of the accounts (default lead; not with --teams)")
    p.add_argument("--teams", type=_at_least(int, 1), default=None,
                   help="spread the accounts round-robin over this many teams, \"Load test 01\" ..., the first "
                        "account of each team its lead and the others members (default: all in team "
                        "\"Load test\", for the live scenario use e.g. --count 40 --teams 10)")
    p.add_argument("--history-days", type=_at_least(int, 0), default=0,
                   help="with --teams: give each of those teams without history about one entry per account "
                        "per day for this many days before today (default 0)")
    return p


LIVE_EPILOG = f"""\
Create accounts spread over teams first (same DATABASE_URL as the site):
  {PROG} accounts --count 40 --teams 10 --history-days 365
The writer inserts straight into PostgreSQL (asyncpg, autocommit): latency runs from the moment
an INSERT returned (its commit) to the data update's arrival at each session allowed to see it.
Exit status: 0 run completed (missed, duplicated, misdelivered are reported, not fatal),
1 cannot start, 2 bad arguments.
"""


def _mix(text: str) -> tuple[tuple[str, float], ...]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def live_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} live", epilog=LIVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Open live dashboard sessions as browsers do, write entries at a steady rate from the same "
                    "process, and report commit-to-arrival latency and deliveries (missed, duplicated, "
                    "misdelivered) per session.")
    p.add_argument("--url", type=_url, required=True, help="the site's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                   help="the site's database, for the writer (default: $DATABASE_URL)")
    p.add_argument("--users", type=_at_least(int, 1), default=40,
                   help="load-test accounts <prefix>-001.. to use; their teams and roles come from the "
                        "database (default 40)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"account name prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--password", default=os.environ.get("LOADTEST_PASSWORD") or DEV_LOADTEST_PASSWORD,
                   help="the accounts' password (default: $LOADTEST_PASSWORD, else the dev-only default)")
    p.add_argument("--sessions", type=_at_least(int, 1), default=400, help="sessions to keep open (default 400)")
    p.add_argument("--rate", type=_at_least(float, 0, strict=True), default=10.0,
                   help="writes per second (default 10)")
    p.add_argument("--seconds", type=_at_least(float, 0, strict=True), default=30.0,
                   help="seconds of writing (default 30)")
    default_mix = ",".join(f"{name}={weight:g}" for name, weight in DEFAULT_MIX)
    p.add_argument("--dashboard-mix", type=_mix, default=DEFAULT_MIX, metavar="NAME=WEIGHT,...",
                   help=f"share of sessions per dashboard (default {default_mix}); team and my-happiness "
                        "sessions use the accounts in teams, teams sessions the leads")
    p.add_argument("--baseline", action="store_true",
                   help="open team-polling instead of team (the site must run with BLOCKING_BASELINE=1): every "
                        f"session re-queries every {POLL_S:g} s and gets the whole data set")
    p.add_argument("--grace", type=_at_least(float, 0), default=None,
                   help=f"seconds to wait for updates after the last write (default {GRACE_S:g}; "
                        f"{GRACE_S + POLL_S:g} with --baseline)")
    p.add_argument("--timeout", type=_at_least(float, 0, strict=True), default=120.0,
                   help="seconds a session may take to open, chart and go live (default 120)")
    p.add_argument("--open-concurrency", type=_at_least(int, 1), default=OPEN_CONCURRENCY,
                   help=f"sessions being opened at once (default {OPEN_CONCURRENCY})")
    p.add_argument("--seed", type=int, help="seed of the writer's random choices (default: random)")
    p.add_argument("--json", type=_output, metavar="PATH", help="write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def live_config_from_args(args: argparse.Namespace) -> LiveConfig:
    return LiveConfig(url=args.url, database_url=args.database_url, users=args.users, prefix=args.prefix,
                      password=args.password, sessions=args.sessions, rate=args.rate, seconds=args.seconds,
                      mix=args.dashboard_mix, baseline=args.baseline, grace=args.grace, timeout=args.timeout,
                      open_concurrency=args.open_concurrency, seed=args.seed)


class LineProgress:
    """Status lines of a live run: redrawn in place on a terminal (tqdm); otherwise each new
    phase, then every few seconds."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.line = StatusLine(stream) if stream.isatty() else None
        self.last = 0.0
        self.phase = ""

    def __call__(self, text: str) -> None:
        now, phase = time.monotonic(), text.split(":")[0]
        if self.line is not None:
            self.line.show(text)
        elif phase != self.phase or now - self.last >= PLAIN_INTERVAL:
            self.stream.write(text + "\n")
            self.stream.flush()
        else:
            return
        self.phase, self.last = phase, now

    def done(self) -> None:
        if self.line is not None:
            self.line.close()


class StatusLine:
    """One line on a terminal that tqdm redraws in place (and clears the rest of)."""

    def __init__(self, stream: TextIO) -> None:
        self.bar: tqdm | None = None
        self.stream = stream

    def show(self, text: str) -> None:
        if self.bar is None:
            self.bar = tqdm(file=self.stream, bar_format="{desc}", dynamic_ncols=True)
        self.bar.set_description_str(text)  # refreshes

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # leaves the last text, ends the line
            self.bar = None


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(url=args.url, users=args.users, prefix=args.prefix, password=args.password,
                      dashboard=args.dashboard, seconds=args.seconds, ramp=args.ramp, sessions=args.sessions,
                      duration=args.duration, identical=args.identical, params=tuple(args.param),
                      timeout=args.timeout)


def render_progress(p: Progress, width: int = 24) -> str:
    """One progress line, drawn by tqdm: the bar fills with started sessions (or elapsed time
    in a closed loop), then the counts and the p50 time to chart so far."""
    p50 = percentile(p.times, 50)
    counts = f"{p.charts} charts, {p.errors} errors" + (f", p50 {p50:.1f} s" if p50 is not None else "")
    if p.planned is not None:
        n, total, unit = p.started, p.planned, "started"
    else:
        duration = p.duration or 0
        n, total, unit = round(min(p.elapsed_s, duration)), int(duration) if float(duration).is_integer() else duration, "s"
        counts = f"{p.started} started, {counts}"
    return tqdm.format_meter(n, total, p.elapsed_s, bar_format=f"[{{bar:{width}}}] {{n_fmt}}/{{total_fmt}} {{unit}}, {{desc}}",
                             ascii=".#", unit=unit, prefix=counts)


class ProgressPrinter:
    """Redraws in place on a terminal; prints a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.line = StatusLine(stream) if stream.isatty() else None
        self.last = 0.0

    def note(self, text: str) -> None:
        """A transient line on a terminal (the progress bar overwrites it); nothing in logs."""
        if self.line is not None:
            self.line.show(text)

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if self.line is not None:
            self.line.show(render_progress(p))
            if p.finished:
                self.line.close()
        elif p.finished or now - self.last >= PLAIN_INTERVAL:
            self.stream.write(render_progress(p) + "\n")
            self.stream.flush()
        else:
            return
        self.last = now

    def close(self) -> None:
        if self.line is not None:
            self.line.close()


def run_main(argv: Sequence[str]) -> int:
    args = run_parser().parse_args(argv)
    config = config_from_args(args)
    progress = None if args.quiet else ProgressPrinter(sys.stderr)
    if progress is not None:
        progress.note(f"logging in {config.active_users} users at {config.url} ...")
    try:
        run = asyncio.run(run_load(config, progress))
    except LoadTestError as exc:
        if progress is not None:
            progress.note("")
            progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(run)
    if args.json:
        write_json(summary, args.json)
    if args.html:
        write_html(summary, args.html)
    print(format_text(summary))
    return 0


def live_main(argv: Sequence[str]) -> int:
    parser = live_parser()
    args = parser.parse_args(argv)
    config = live_config_from_args(args)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    progress = None if args.quiet else LineProgress(sys.stderr)
    try:
        run = asyncio.run(run_live(config, progress))
    except LoadTestError as exc:
        if progress is not None:
            progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if progress is not None:
        progress.done()
    summary = summarize_live(run)
    if args.json:
        write_json(summary, args.json)
    print(format_live(summary))
    return 0


def accounts_main(argv: Sequence[str]) -> int:
    parser = accounts_parser()
    args = parser.parse_args(argv)
    if args.teams is not None and args.role is not None:
        parser.error("--role cannot be combined with --teams (one lead per team, the others members)")
    if args.teams is not None and args.teams > args.count:
        parser.error(f"--teams must not exceed --count ({args.count}), got {args.teams}")
    if args.history_days and args.teams is None:
        parser.error("--history-days needs --teams")
    role = args.role or "lead"
    try:
        settings = Settings.from_env()
        password = resolve_password(settings.app_env, os.environ)
        result = sync_accounts(settings.database_url, args.count, prefix=args.prefix, password=password,
                               query_limit=args.query_limit, role=role, teams=args.teams,
                               history_days=args.history_days)
    except (ConfigError, AccountError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: cannot update the accounts in the database: {reason}", file=sys.stderr)
        return 1
    names = result.usernames
    if args.teams is None:
        who = f"role {role}"
    else:
        who = (f"{len(result.teams)} teams {result.teams[0]} .. {result.teams[-1]}, one lead each, the others members"
               + (f", {result.history_entries} history entries" if args.history_days else ""))
    print(f"{args.prefix}: created {result.created}, updated {result.updated} load-test accounts "
          f"({names[0]} .. {names[-1]}, {who}, query limit {args.query_limit})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["accounts"]:
            return accounts_main(argv[1:])
        if argv[:1] == ["live"]:
            return live_main(argv[1:])
        return run_main(argv[1:] if argv[:1] == ["run"] else argv)
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
