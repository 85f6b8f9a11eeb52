"""Typed SQLAlchemy models: teams, people, happiness entries, and the Bokeh worker registry."""
from __future__ import annotations

import enum
import re
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, DateTime, Enum, ForeignKey, Index, Integer,
    SmallInteger, String, Text, UniqueConstraint, func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Role(str, enum.Enum):
    MEMBER = "member"
    LEAD = "lead"
    ADMIN = "admin"


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)

    members: Mapped[list["User"]] = relationship(back_populates="team")


class User(UserMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[Role] = mapped_column(Enum(Role, name="role", values_callable=lambda e: [m.value for m in e]))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), index=True)
    # Load-test accounts (issue: load tester) may get larger query caps.
    is_loadtest: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # Concurrent long queries this user may run; None means the site's USER_QUERY_LIMIT.
    query_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    team: Mapped[Team | None] = relationship(back_populates="members")

    __table_args__ = (
        CheckConstraint("role = 'admin' OR team_id IS NOT NULL", name="non_admins_have_a_team"),
        CheckConstraint("query_limit IS NULL OR query_limit BETWEEN 1 AND 10000", name="query_limit_positive"),
    )

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class HappinessEntry(Base):
    """One 'how do you feel' log line. team_id is the team at the time of the entry."""

    __tablename__ = "happiness_entries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    score: Mapped[int] = mapped_column(SmallInteger)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())

    __table_args__ = (
        CheckConstraint("score BETWEEN 1 AND 10", name="score_1_to_10"),
        CheckConstraint("length(note) <= 500", name="note_length"),
        Index("ix_entries_user_time", "user_id", "created_at"),
        Index("ix_entries_team_time", "team_id", "created_at"),
    )


class BokehWorker(Base):
    """A live Bokeh server: one per gunicorn worker, addressed by nginx at host:port."""

    __tablename__ = "bokeh_workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sessions: Mapped[int] = mapped_column(Integer, server_default="0")
    pending: Mapped[int] = mapped_column(Integer, server_default="0")
    pending_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("host", "port", name="uq_bokeh_workers_host_port"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),
    )

    @property
    def name(self) -> str:
        return worker_name(self.id)


def worker_name(worker_id: int) -> str:
    """The path segment that names a worker in /bokeh/<name>/..."""
    return f"w{worker_id}"


def worker_id_of(name: str) -> int:
    """The registry id a worker's name carries (worker_name's inverse): "w7" -> 7; ValueError
    for anything that is not a worker's name."""
    if not WORKER_NAME.fullmatch(name):
        raise ValueError(f"not a worker name: {name[:20]!r}")
    return int(name[1:])


# What worker_name makes of a serial id (int4: at most 10 digits).
WORKER_NAME = re.compile(r"w[1-9][0-9]{0,9}")
