"""Who may open which dashboard with which parameters, and what data that lets them read.

Pure functions, used twice: by Flask before it mints a session token, and by the Bokeh
apps on the token's claims before they query. The data scope returned here is the only
input the apps' SQL filters on, so access is enforced in the query itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable, Mapping

MEMBER, LEAD, ADMIN = "member", "lead", "admin"
ROLES = (MEMBER, LEAD, ADMIN)

SLOW_QUERY_MAX_SECONDS = 60.0
SLOW_QUERY_DEFAULT_SECONDS = 5.0
# `variant` only makes otherwise identical slow queries distinct (load testers defeat coalescing with it).
SLOW_QUERY_MAX_VARIANT = 10**9
# The generated history spans about two years; windows are days of a rolling mean.
MAX_DAYS = 3650
MAX_WINDOW = 90
# Dates a dashboard accepts: nothing was logged before the first, and date arithmetic on the
# edges of Python's calendar (a year before 0001-01-05) raises instead of answering.
MIN_DATE = date(1970, 1, 1)
MAX_DATE = date(2999, 12, 31)
# The teams comparison shows this many days up to `end` when no `start` is given.
DEFAULT_SPAN_DAYS = 365


def today() -> date:
    """The day entries count for (they are grouped by UTC day)."""
    return datetime.now(timezone.utc).date()
BLOCKING_BASELINE = "slow-query-blocking"
# The live benchmark's baseline: the team chart re-queried every 5 s, whole data each time.
POLLING_BASELINE = "team-polling"


class AccessError(Exception):
    """Base of the errors a user is shown; `status` is the HTTP status to answer with."""

    status = 400


class ParamError(AccessError):
    status = 400


class AccessDenied(AccessError):
    status = 403


class UnknownDashboard(AccessError):
    status = 404


@dataclass(frozen=True)
class Principal:
    """The facts about a user that access decisions depend on."""

    user_id: int
    username: str
    role: str
    team_id: int | None
    is_loadtest: bool = False
    # Concurrent long queries this user may run; None means the site's USER_QUERY_LIMIT.
    query_limit: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise AccessDenied(f"unknown role {self.role!r}")
        if self.query_limit is not None and not (isinstance(self.query_limit, int) and self.query_limit >= 1):
            raise AccessDenied(f"invalid query limit {self.query_limit!r}")


@dataclass(frozen=True)
class Dashboard:
    name: str
    title: str
    description: str
    allowed: Callable[[Principal], bool]
    parse: Callable[[Mapping[str, str]], dict[str, Any]]
    params: tuple[str, ...] = field(default=())
    # Unlisted dashboards are not in the menu; Flask serves them only when the site enables them.
    listed: bool = True
    # Live dashboards show new happiness entries as they are written (bokeh_apps.kit.live).
    live: bool = False


def _int_param(args: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ParamError(f"'{name}' must be a whole number, got {str(raw)[:40]!r}") from None
    if not lo <= value <= hi:
        raise ParamError(f"'{name}' must be between {lo} and {hi}, got {value}")
    return value


def _date_param(args: Mapping[str, str], name: str) -> str | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = date.fromisoformat(str(raw))
    except ValueError:
        raise ParamError(f"'{name}' must be a date like 2026-01-31, got {str(raw)[:40]!r}") from None
    if not MIN_DATE <= value <= MAX_DATE:
        raise ParamError(f"'{name}' must be between {MIN_DATE} and {MAX_DATE}, got {value}")
    return value.isoformat()


def _parse_history(args: Mapping[str, str]) -> dict[str, Any]:
    return {"days": _int_param(args, "days", 365, 1, MAX_DAYS)}


def _parse_team(args: Mapping[str, str]) -> dict[str, Any]:
    return {"days": _int_param(args, "days", 365, 1, MAX_DAYS), "team": _int_param(args, "team", None, 1, 2**31 - 1)}


def _parse_teams(args: Mapping[str, str]) -> dict[str, Any]:
    start, end = _date_param(args, "start"), _date_param(args, "end")
    if start and end and start > end:
        raise ParamError("'start' must not be after 'end'")
    if start and not end and start > today().isoformat():
        raise ParamError(f"'start' is after today ({today()}); give an 'end' too")
    return {"start": start, "end": end, "window": _int_param(args, "window", 7, 1, MAX_WINDOW)}


def _parse_slow(args: Mapping[str, str]) -> dict[str, Any]:
    variant = _int_param(args, "variant", 0, 0, SLOW_QUERY_MAX_VARIANT)
    raw = args.get("seconds")
    if raw is None or raw == "":
        return {"seconds": SLOW_QUERY_DEFAULT_SECONDS, "variant": variant}
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ParamError(f"'seconds' must be a number, got {str(raw)[:40]!r}") from None
    if seconds != seconds:  # NaN
        raise ParamError("'seconds' must be a number")
    # Clamped, not refused: load testers sweep this value and want the nearest valid run.
    return {"seconds": min(max(seconds, 0.0), SLOW_QUERY_MAX_SECONDS), "variant": variant}


DASHBOARDS: dict[str, Dashboard] = {
    d.name: d
    for d in (
        Dashboard("my-happiness", "My happiness", "Your own happiness history.",
                  lambda p: True, _parse_history, ("days",), live=True),
        Dashboard("team", "My team", "Your team's average happiness over time.",
                  lambda p: p.role == ADMIN or p.team_id is not None, _parse_team, ("days", "team"), live=True),
        Dashboard("teams", "All teams", "Every team compared, with a date range and rolling window.",
                  lambda p: p.role in (LEAD, ADMIN), _parse_teams, ("start", "end", "window"), live=True),
        Dashboard("slow-query", "Slow query", "A query that takes ?seconds=N, for load testing.",
                  lambda p: p.role == ADMIN or p.is_loadtest, _parse_slow, ("seconds", "variant")),
        Dashboard(BLOCKING_BASELINE, "Slow query, blocking baseline",
                  "The same query run synchronously in the app function, as common embed examples do "
                  "(benchmark baseline; stalls its worker).",
                  lambda p: p.role == ADMIN or p.is_loadtest, _parse_slow, ("seconds", "variant"), listed=False),
        Dashboard(POLLING_BASELINE, "My team, polling baseline",
                  "The team chart as the happiness demo first did it: every session re-queries every 5 s "
                  "(benchmark baseline for live updates).",
                  lambda p: p.role == ADMIN or p.team_id is not None, _parse_team, ("days", "team"), listed=False),
    )
}


def dashboard(name: str) -> Dashboard:
    try:
        return DASHBOARDS[name]
    except KeyError:
        raise UnknownDashboard(f"there is no dashboard called {name[:60]!r}") from None


def dashboards_for(principal: Principal) -> list[Dashboard]:
    """The dashboards this user may open, in menu order."""
    return [d for d in DASHBOARDS.values() if d.listed and d.allowed(principal)]


def parse_params(name: str, args: Mapping[str, str]) -> dict[str, Any]:
    """Validate a dashboard's query arguments; unknown arguments are an error, not ignored."""
    board = dashboard(name)
    unknown = sorted(set(args) - set(board.params))
    if unknown:
        allowed = ", ".join(board.params) or "none"
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)[:80]} for {name}; allowed: {allowed}")
    return board.parse(args)


def authorize(principal: Principal, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Return the data scope `principal` may read on dashboard `name`, or raise AccessDenied.

    The scope holds only ids the SQL filters on: {"user_id"}, {"team_id"} or {"all_teams"}.
    """
    board = dashboard(name)
    if not board.allowed(principal):
        raise AccessDenied(f"your role ({principal.role}) may not open {name}")
    if name == "my-happiness":
        return {"user_id": principal.user_id}
    if name in ("team", POLLING_BASELINE):
        wanted = params.get("team")
        if principal.role == ADMIN:
            if wanted is None:
                raise ParamError("admins choose a team: add ?team=<id>")
            return {"team_id": int(wanted)}
        if wanted is not None and wanted != principal.team_id:
            raise AccessDenied("you may only see your own team")
        return {"team_id": principal.team_id}
    if name == "teams":
        return {"all_teams": True}
    if name in ("slow-query", BLOCKING_BASELINE):
        return {}
    raise UnknownDashboard(name)  # pragma: no cover - DASHBOARDS and this function change together

