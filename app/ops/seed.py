"""Demo data, idempotent: the five demo accounts and a large generated history.

The generated history (synthetic people in several teams, two years of entries) is what
makes the `teams` dashboard's aggregate genuinely heavy: about 400,000 rows by default.
"""
from __future__ import annotations

import logging

from sqlalchemy import Connection, text
from werkzeug.security import generate_password_hash

log = logging.getLogger(__name__)

DEMO_PASSWORD = "demo"
DEMO_TEAMS = ("Platform", "Design")
GENERATED_TEAMS = ("Data", "Support", "Sales", "Operations", "Research", "Marketing", "Finance", "Security")
# (username, role, team): the accounts the README lists.
DEMO_USERS = (
    ("admin", "admin", None),
    ("lead", "lead", "Platform"),
    ("alice", "member", "Platform"),
    ("bob", "member", "Platform"),
    ("carol", "member", "Design"),
)
PEOPLE_PER_TEAM = 60
HISTORY_DAYS = 730
# A hash no password matches: generated people cannot log in.
UNUSABLE_PASSWORD = "!"


def seed(conn: Connection, *, people_per_team: int = PEOPLE_PER_TEAM, history_days: int = HISTORY_DAYS) -> bool:
    """Insert the demo data unless it is there; returns True when it inserted anything."""
    if conn.execute(text("SELECT 1 FROM users WHERE username = 'admin'")).first() is not None:
        return False
    for name in (*DEMO_TEAMS, *GENERATED_TEAMS):
        conn.execute(text("INSERT INTO teams (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"), {"n": name})
    teams = dict(conn.execute(text("SELECT name, id FROM teams")).all())
    password_hash = generate_password_hash(DEMO_PASSWORD)
    for username, role, team in DEMO_USERS:
        conn.execute(text("INSERT INTO users (username, password_hash, role, team_id) VALUES (:u, :h, :r, :t)"),
                     {"u": username, "h": password_hash, "r": role, "t": teams.get(team) if team else None})
    # Synthetic people: person-<team>-<n>, members of every team (demo teams too).
    conn.execute(text("""
        INSERT INTO users (username, password_hash, role, team_id)
        SELECT 'person-' || lower(t.name) || '-' || n, :h, 'member', t.id
        FROM teams t CROSS JOIN generate_series(1, :n) AS n
    """), {"h": UNUSABLE_PASSWORD, "n": people_per_team})
    # About one entry per person per day, with a seasonal wave per team and some noise. The
    # history is not news: no live-update notification per generated row (400k of them).
    conn.execute(text("ALTER TABLE happiness_entries DISABLE TRIGGER happiness_entry_notify"))
    conn.execute(text("""
        INSERT INTO happiness_entries (user_id, team_id, score, note, created_at)
        SELECT u.id, u.team_id,
               greatest(1, least(10, round(6 + 2 * sin(d / 45.0 + u.team_id) + (random() * 4 - 2))))::smallint,
               '', now() - make_interval(days => d, secs => (random() * 86400)::int)
        FROM users u CROSS JOIN generate_series(1, :days) AS d
        WHERE u.team_id IS NOT NULL AND random() < 0.85
    """), {"days": history_days})
    conn.execute(text("ALTER TABLE happiness_entries ENABLE TRIGGER happiness_entry_notify"))
    conn.execute(text("ANALYZE happiness_entries"))
    count = conn.execute(text("SELECT count(*) FROM happiness_entries")).scalar_one()
    log.info("seeded demo data: %s happiness entries", count)
    return True
