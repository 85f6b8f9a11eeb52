"""Load-test accounts: <prefix>-001 ... <prefix>-NNN, created or reused in one transaction."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from sqlalchemy import select
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
# Usernames are String(64); "-NNNNN" takes at most 6 more characters.
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")


class AccountError(ValueError):
    """Bad input or a state the accounts cannot be made from; the message says which."""


@dataclass(frozen=True)
class AccountsResult:
    usernames: list[str]
    created: int
    updated: int


def username(prefix: str, index: int) -> str:
    """The index-th (1-based) load-test account: loadtest-001, ..., loadtest-1000."""
    return f"{prefix}-{index:03d}"


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
                  query_limit: int = DEFAULT_QUERY_LIMIT, role: str = "lead") -> AccountsResult:
    """Create or update <prefix>-001..<prefix>-<count>; refuse to touch non-load-test users."""
    check_prefix(prefix)
    if not 1 <= count <= MAX_ACCOUNTS:
        raise AccountError(f"count must be between 1 and {MAX_ACCOUNTS}, got {count}")
    if not 1 <= query_limit <= 10000:
        raise AccountError(f"query limit must be between 1 and 10000, got {query_limit}")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not password:
        raise AccountError("the password is empty")
    names = [username(prefix, i) for i in range(1, count + 1)]
    # One hash for every account: scrypt is deliberately slow, and the accounts are interchangeable.
    password_hash = generate_password_hash(password)
    engine = make_engine(database_url)
    try:
        with Session(engine) as db, db.begin():
            db.execute(insert(Team).values(name=TEAM_NAME).on_conflict_do_nothing(index_elements=["name"]))
            team_id = db.scalar(select(Team.id).where(Team.name == TEAM_NAME))
            existing = {u.username: u for u in db.scalars(select(User).where(User.username.in_(names)))}
            foreign = sorted(name for name, user in existing.items() if not user.is_loadtest)
            if foreign:
                raise AccountError(f"{', '.join(foreign[:5])} already exist(s) and is not a load-test account; "
                                   f"choose another --prefix")
            for name in names:
                user = existing.get(name) or User(username=name)
                user.password_hash, user.role, user.team_id = password_hash, Role(role), team_id
                user.is_loadtest, user.query_limit = True, query_limit
                db.add(user)
    finally:
        engine.dispose()
    return AccountsResult(names, created=count - len(existing), updated=len(existing))


def ensure_accounts(database_url: str, count: int, *, prefix: str = DEFAULT_PREFIX, password: str,
                    query_limit: int = DEFAULT_QUERY_LIMIT, role: str = "lead") -> list[str]:
    """Make sure the accounts exist with this password; return their usernames."""
    return sync_accounts(database_url, count, prefix=prefix, password=password,
                         query_limit=query_limit, role=role).usernames
