"""Teams, users, happiness entries and the Bokeh worker registry.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Registry changes are announced on this channel; the edge re-renders nginx routes on each.
REGISTRY_CHANNEL = "bokeh_workers"


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False, unique=True),
    )
    role = sa.Enum("member", "lead", "admin", name="role")
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", role, nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=True, index=True),
        sa.Column("is_loadtest", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role = 'admin' OR team_id IS NOT NULL", name="non_admins_have_a_team"),
    )
    op.create_table(
        "happiness_entries",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("score", sa.SmallInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("score BETWEEN 1 AND 10", name="score_1_to_10"),
        sa.CheckConstraint("length(note) <= 500", name="note_length"),
    )
    op.create_index("ix_entries_user_time", "happiness_entries", ["user_id", "created_at"])
    op.create_index("ix_entries_team_time", "happiness_entries", ["team_id", "created_at"])

    op.create_table(
        "bokeh_workers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sessions", sa.Integer, nullable=False, server_default="0"),
        # Sessions Flask assigned that the worker has not yet reported as created.
        sa.Column("pending", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("host", "port", name="uq_bokeh_workers_host_port"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),
    )
    # Heartbeats update heartbeat_at/sessions only, so they do not fire this trigger:
    # nginx reloads when the set of routes changes, not every few seconds. Row-level, so a
    # reclaim that deletes nothing says nothing; PostgreSQL folds identical notifications
    # within one transaction, so a burst of rows is still one wake-up.
    op.execute(f"""
        CREATE FUNCTION notify_bokeh_workers() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{REGISTRY_CHANNEL}', TG_OP);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
    """)
    op.execute("""
        CREATE TRIGGER bokeh_workers_changed
        AFTER INSERT OR DELETE OR UPDATE OF host, port ON bokeh_workers
        FOR EACH ROW EXECUTE FUNCTION notify_bokeh_workers();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bokeh_workers_changed ON bokeh_workers")
    op.execute("DROP FUNCTION IF EXISTS notify_bokeh_workers()")
    op.drop_table("bokeh_workers")
    op.drop_table("happiness_entries")
    op.drop_table("users")
    op.drop_table("teams")
    sa.Enum(name="role").drop(op.get_bind(), checkfirst=True)
