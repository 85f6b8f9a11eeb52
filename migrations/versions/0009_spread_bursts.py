"""choose_worker() spreads a burst: fewest pending sessions first, then fewest sessions.

Ordered by sessions + pending, a worker that had just started (0 sessions) took every page of
a burst until it caught up with the others: after a rolling restart, all 15-20 charts of the
retired worker re-embedded on its one replacement, which built their documents one after
another in 3.2-5.2 s, while the charts that went to older workers were back in 0.35-1.6 s
(make drill, rolling restart). What delays a new session is the documents its worker still has
to build, which `pending` approximates (sessions chosen since its last heartbeat); the open
sessions it already holds cost memory, not latency. So pending decides, and sessions break
ties: a burst is dealt round the workers, and quiet-time pages still fill the emptiest one.

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHOOSE = """
    CREATE OR REPLACE FUNCTION choose_worker(p_lock bigint, p_ttl double precision, p_prefer integer, p_host text)
    RETURNS TABLE (id integer, host varchar, port integer, pid integer, sessions integer,
                   started_at timestamptz, heartbeat_at timestamptz) AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(p_lock);
        RETURN QUERY
        UPDATE bokeh_workers w SET pending = w.pending + 1, pending_at = now()
        WHERE w.id = (
            SELECT c.id FROM bokeh_workers c
            WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl) AND c.ready_at IS NOT NULL
            ORDER BY {order}, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
            LIMIT 1)
        RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at;
    END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute(CHOOSE.format(order="c.pending, c.sessions"))


def downgrade() -> None:
    op.execute(CHOOSE.format(order="c.sessions + c.pending"))
