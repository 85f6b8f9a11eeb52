"""choose_worker() in the database: the advisory lock lasts one statement, not one request;
and bokeh_workers.pending_at, so that pending counts of pages that never loaded expire.

Called in autocommit, the lock is released when the function returns, whatever the
calling thread does next. Held until the request's commit instead, a starved Flask thread
(the GIL is shared with the worker's busy Bokeh loop) held up every page load of the site
and, through the row lock on `pending`, the worker heartbeats too.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # When Flask last assigned this worker a page. Past the session token's lifetime no
    # pending page can still become a session, so the heartbeat drops the count.
    op.execute("ALTER TABLE bokeh_workers ADD COLUMN pending_at timestamptz")
    # Each statement of a plpgsql function takes a fresh snapshot, so the UPDATE sees the
    # `pending` counts every earlier chooser committed before this one got the lock.
    op.execute("""
        CREATE FUNCTION choose_worker(p_lock bigint, p_ttl double precision, p_prefer integer, p_host text)
        RETURNS TABLE (id integer, host varchar, port integer, pid integer, sessions integer,
                       started_at timestamptz, heartbeat_at timestamptz) AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(p_lock);
            RETURN QUERY
            UPDATE bokeh_workers w SET pending = w.pending + 1, pending_at = now()
            WHERE w.id = (
                SELECT c.id FROM bokeh_workers c
                WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl)
                ORDER BY c.sessions + c.pending, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
                LIMIT 1)
            RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at;
        END $$ LANGUAGE plpgsql
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS choose_worker(bigint, double precision, integer, text)")
    op.execute("ALTER TABLE bokeh_workers DROP COLUMN pending_at")
