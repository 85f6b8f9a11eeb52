"""What the admin console reads: every worker's own figures, and who each query in flight is for.

- bokeh_workers.stats (jsonb): filled by each worker's heartbeat (app.serving.heartbeat):
  sessions per dashboard, queries running and queued, memory, live updates per second,
  recent errors. One small JSON per beat on a row the beat updates anyway; the registry
  trigger fires on host/port changes only, so it still does not wake the edge.
- query_tickets gains what a ticket is for (dashboard, label, the query's coalescing key,
  the user's limit, the dashboard's cache TTL), written by the INSERT that takes the place
  in line, so no query pays an extra round trip. A ticket whose key has a row in query_runs
  and which is among the user's first `query_limit` is a session sharing that run; one
  further back waits in the user's line.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE bokeh_workers ADD COLUMN stats jsonb NOT NULL DEFAULT '{}'::jsonb")
    op.execute("""
        ALTER TABLE query_tickets
            ADD COLUMN dashboard text,
            ADD COLUMN label text,
            ADD COLUMN query_key text,
            ADD COLUMN query_limit integer,
            ADD COLUMN cache_ttl double precision
    """)


def downgrade() -> None:
    op.execute("""
        ALTER TABLE query_tickets
            DROP COLUMN dashboard, DROP COLUMN label, DROP COLUMN query_key,
            DROP COLUMN query_limit, DROP COLUMN cache_ttl
    """)
    op.execute("ALTER TABLE bokeh_workers DROP COLUMN stats")
