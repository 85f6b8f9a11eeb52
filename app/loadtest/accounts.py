"""Load-test accounts: <prefix>-001 ... <prefix>-NNN, created or reused in one transaction.

By default they are all in one team, "Load test", with one role. With `teams=N` they are spread
round-robin over N teams "Load test 01" ... (the live scenario needs writers and viewers in many
teams): account i is in team ((i - 1) mod N) + 1, the first account of each team is its lead and
the others are members. `history_days` gives each of those teams that has no history yet about
one entry per account per day before today (as the demo's generated teams have), so a team
chart holds a realistic year of days rather than an empty one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from app.config import DEV_ENVIRONMENTS
from app.database import make_engine
from app.models import Role, Team, User

# Accepted only when APP_ENV is dev/demo/test, so a fresh `make run` can be load tested at once.
DEV_LOADTEST_PASSWORD = "loadtest-dev-only"
MIN_PASSWORD_LENGTH = 12
DEFAULT_PREFIX = "loadtest"
DEFAULT_QUERY_LIMIT = 100
TEAM_NAME = "Load test"
ROLES = ("lead", "member")
MAX_ACCOUNTS = 10000
MAX_TEAMS = 999
MAX_HISTORY_DAYS = 3650
# Usernames are String(64); "-NNNNN" takes at most 6 more characters.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")


class AccountError(ValueError):
    """Bad input or a state the accounts cannot be made from; the message says which."""


@dataclass(frozen=True)
class AccountsResult:
    usernames: list[str]
    created: int
    updated: int
    teams: list[str] = field(default_factory=lambda: [TEAM_NAME])
    history_entries: int = 0


def username(prefix: str, index: int) -> str:
    """The index-th (1-based) load-test account: loadtest-001, ..., loadtest-1000."""
    return f"{prefix}-{index:03d}"


def team_name(index: int, teams: int) -> str:
    """The index-th (1-based) of `teams` load-test teams: "Load test 01" ... ("Load test 001" past 99)."""
    return f"{TEAM_NAME} {index:0{max(2, len(str(teams)))}d}"


def team_plan(count: int, teams: int) -> list[tuple[int, str]]:
    """(team index, role) of accounts 1..count spread over `teams` teams: round-robin, so any
    first k accounts cover min(k, teams) teams; the first account of each team leads it."""
    return [((i % teams) + 1, "lead" if i < teams else "member") for i in range(count)]


# About one entry per account and day before today, with a wave per team and some noise (as
# app.ops.seed generates); created before today's UTC midnight, so today starts empty.
HISTORY_SQL = text("""
    INSERT INTO happiness_entries (user_id, team_id, score, note, created_at)
    SELECT u.id, u.team_id,
           greatest(1, least(10, round(6 + 2 * sin(d / 45.0 + u.team_id) + (random() * 4 - 2))))::smallint, '',
           date_trunc('day', now(), 'UTC') - make_interval(days => d) + make_interval(secs => floor(random() * 86399))
    FROM users u CROSS JOIN generate_series(1, :days) AS d
    WHERE u.username = ANY(:names) AND u.team_id = ANY(:teams) AND random() < 0.85
""")
HISTORY_EXISTS_SQL = text("""
    SELECT DISTINCT team_id FROM happiness_entries
    WHERE team_id = ANY(:teams) AND created_at < date_trunc('day', now(), 'UTC')
""")


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise AccountError(f"prefix must be 1-50 letters, digits, '.', '_' or '-', got {prefix[:60]!r}")
    return prefix


def resolve_password(app_env: str, env: Mapping[str, str]) -> str:
    """LOADTEST_PASSWORD; in dev a documented default when unset; elsewhere a real one is required."""
    password = env.get("LOADTEST_PASSWORD", "")
    if app_env in DEV_ENVIRONMENTS:
        return password or DEV_LOADTEST_PASSWORD
    if len(password) < MIN_PASSWORD_LENGTH or password == DEV_LOADTEST_PASSWORD:
        raise AccountError(f"set LOADTEST_PASSWORD to a password of at least {MIN_PASSWORD_LENGTH} characters "
                           f"(APP_ENV={app_env} is not a dev environment, so there is no default)")
    return password


def sync_accounts(database_url: str, count: int, *, prefix: str = DEFAULT_PREFIX, password: str,
                  query_limit: int = DEFAULT_QUERY_LIMIT, role: str = "lead", teams: int | None = None,
                  history_days: int = 0) -> AccountsResult:
    """Create or update <prefix>-001..<prefix>-<count>; refuse to touch non-load-test users.

    teams=None: all in team "Load test" with `role`. teams=N: spread over N teams (team_plan);
    `role` is then ignored. history_days (only with teams) backfills teams without history.
    """
    check_prefix(prefix)
    if not 1 <= count <= MAX_ACCOUNTS:
        raise AccountError(f"count must be between 1 and {MAX_ACCOUNTS}, got {count}")
    if not 1 <= query_limit <= 10000:
        raise AccountError(f"query limit must be between 1 and 10000, got {query_limit}")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not password:
        raise AccountError("the password is empty")
    if teams is not None and not 1 <= teams <= min(count, MAX_TEAMS):
        raise AccountError(f"teams must be between 1 and the account count ({min(count, MAX_TEAMS)}), got {teams}")
    if not 0 <= history_days <= MAX_HISTORY_DAYS:
        raise AccountError(f"history days must be between 0 and {MAX_HISTORY_DAYS}, got {history_days}")
    if history_days and teams is None:
        raise AccountError("history is generated only for accounts spread over teams (give teams)")
    names = [username(prefix, i) for i in range(1, count + 1)]
    team_names = [TEAM_NAME] if teams is None else [team_name(t, teams) for t in range(1, teams + 1)]
    plan = [(1, role)] * count if teams is None else team_plan(count, teams)
    history = 0
    # One hash for every account: scrypt is deliberately slow, and the accounts are interchangeable.
    password_hash = generate_password_hash(password)
    engine = make_engine(database_url)
    try:
        with Session(engine) as db, db.begin():
            for name in team_names:
                db.execute(insert(Team).values(name=name).on_conflict_do_nothing(index_elements=["name"]))
            ids = dict(db.execute(select(Team.name, Team.id).where(Team.name.in_(team_names))).all())
            existing = {u.username: u for u in db.scalars(select(User).where(User.username.in_(names)))}
            foreign = sorted(name for name, user in existing.items() if not user.is_loadtest)
            if foreign:
                raise AccountError(f"{', '.join(foreign[:5])} already exist(s) and is not a load-test account; "
                                   f"choose another --prefix")
            for name, (team, account_role) in zip(names, plan):
                user = existing.get(name) or User(username=name)
                user.password_hash, user.role = password_hash, Role(account_role)
                user.team_id = ids[team_names[team - 1]]
                user.is_loadtest, user.query_limit = True, query_limit
                db.add(user)
            if history_days:
                db.flush()
                team_ids = list(ids.values())
                has_history = set(db.scalars(HISTORY_EXISTS_SQL, {"teams": team_ids}))
                fresh = [t for t in team_ids if t not in has_history]
                if fresh:
                    # History is not news: no live-update notification per generated row (as app.ops.seed).
                    db.execute(text("ALTER TABLE happiness_entries DISABLE TRIGGER happiness_entry_notify"))
                    history = db.execute(HISTORY_SQL, {"days": history_days, "names": names, "teams": fresh}).rowcount
                    db.execute(text("ALTER TABLE happiness_entries ENABLE TRIGGER happiness_entry_notify"))
    finally:
        engine.dispose()
    return AccountsResult(names, created=count - len(existing), updated=len(existing), teams=team_names,
                          history_entries=history)


def ensure_accounts(database_url: str, count: int, *, prefix: str = DEFAULT_PREFIX, password: str,
                    query_limit: int = DEFAULT_QUERY_LIMIT, role: str = "lead", teams: int | None = None,
                    history_days: int = 0) -> list[str]:
    """Make sure the accounts exist with this password; return their usernames."""
    return sync_accounts(database_url, count, prefix=prefix, password=password, query_limit=query_limit,
                         role=role, teams=teams, history_days=history_days).usernames
