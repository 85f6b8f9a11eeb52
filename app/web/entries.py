"""Logging how you feel: the one validation and the one insert behind the form and the API.

Every write is ONE transaction that inserts exactly one happiness_entries row (a trigger
NOTIFYs the open charts about it in that transaction), and every failure rolls the
session back whole, so nothing is half-written and no request leaves the session dirty.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sqlalchemy.orm import Session

from app.models import HappinessEntry, User

MIN_SCORE, MAX_SCORE = 1, 10
MAX_NOTE = 500
FIELDS = ("score", "note")
# Newline and tab are text; every other control character (C0, DEL, C1) is refused:
# PostgreSQL rejects NUL outright, and the rest are never typed by people.
ALLOWED_CONTROLS = frozenset("\n\t")

SCORE_REASON = f"The score must be a whole number from {MIN_SCORE} to {MAX_SCORE}."
NO_TEAM_REASON = "Only team members log happiness; your account has no team."


class EntryError(Exception):
    """A write that is refused (a 400); the message is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NewEntry:
    score: int
    note: str


def parse_score(raw: Any) -> int:
    """An int, or a string of ASCII digits, from 1 to 10. Booleans and floats are not scores."""
    if raw is None or (isinstance(raw, str) and raw == ""):
        raise EntryError(f"The score is missing; choose a whole number from {MIN_SCORE} to {MAX_SCORE}.")
    if isinstance(raw, bool):                 # True is an int in Python, not a score
        raise EntryError(SCORE_REASON)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str):
        # str.isdigit() accepts "²" and "１"; int() then raises or reads fullwidth digits.
        if not (raw.isascii() and raw.isdigit()):
            raise EntryError(SCORE_REASON)
        digits = raw.lstrip("0") or "0"
        if len(digits) > 2:                   # out of range; and int() of 4300+ digits raises
            raise EntryError(SCORE_REASON)
        value = int(digits)
    else:
        raise EntryError(SCORE_REASON)
    if not MIN_SCORE <= value <= MAX_SCORE:
        raise EntryError(SCORE_REASON)
    return value


def parse_note(raw: Any) -> str:
    """Optional text without control characters (newline and tab allowed), ≤ 500 characters after strip."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise EntryError("The note must be text.")
    for ch in raw:
        if ch in ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            raise EntryError(f"The note may not contain control characters (found U+{ord(ch):04X}); "
                             "only newlines and tabs are allowed.")
        if category == "Cs":                  # a lone surrogate (JSON "\ud800") is not storable text
            raise EntryError(f"The note is not valid Unicode text (lone surrogate U+{ord(ch):04X}).")
    note = raw.strip()
    if len(note) > MAX_NOTE:
        raise EntryError(f"The note may be at most {MAX_NOTE} characters (it has {len(note)}).")
    return note


def validate(raw_score: Any, raw_note: Any) -> NewEntry:
    return NewEntry(parse_score(raw_score), parse_note(raw_note))


def from_json(payload: Any) -> NewEntry:
    """The API body: a JSON object with `score` and an optional `note`, nothing else."""
    if not isinstance(payload, Mapping):
        raise EntryError('The body must be a JSON object, like {"score": 7, "note": "..."}.')
    unknown = sorted(str(key) for key in payload if key not in FIELDS)
    if unknown:
        raise EntryError(f"Unknown field(s): {', '.join(unknown)}; send only score and note.")
    if "score" not in payload:
        raise EntryError(f"The score is missing; choose a whole number from {MIN_SCORE} to {MAX_SCORE}.")
    return validate(payload["score"], payload.get("note"))


def log_entry(session: Session, user: User, *, score: Any, note: Any) -> HappinessEntry:
    """The form: validate `score` and `note` and insert one entry for `user` (see _insert)."""
    return _insert(session, user, lambda: validate(score, note))


def log_json_entry(session: Session, user: User, payload: Any) -> HappinessEntry:
    """The API: validate a decoded JSON body and insert one entry for `user` (see _insert)."""
    return _insert(session, user, lambda: from_json(payload))


def _insert(session: Session, user: User, parse: Callable[[], NewEntry]) -> HappinessEntry:
    """Check the user and the input, then insert exactly one row and commit: one transaction.

    Raises EntryError when refused; on that and on any other failure the session is rolled back.
    """
    try:
        if user.team_id is None:
            raise EntryError(NO_TEAM_REASON)
        entry = parse()
        if session.new or session.dirty or session.deleted:
            # Only this row may be in the transaction the NOTIFY trigger reports.
            raise RuntimeError("logging an entry needs a session without pending changes")
        row = HappinessEntry(user_id=user.id, team_id=user.team_id, score=entry.score, note=entry.note)
        session.add(row)
        session.commit()
    except BaseException:  # the database down is app.web.errors' 503, after this rollback
        session.rollback()
        raise
    return row


def as_json(row: HappinessEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "score": row.score,
        "note": row.note,
        "created_at": row.created_at.isoformat(),
        "team_id": row.team_id,
        "user_id": row.user_id,
    }
