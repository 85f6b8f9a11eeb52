"""bokeh_workers.ready_at: a worker is sent pages only once its Bokeh server serves.

A worker inserts its row when it reserves its port, before its Bokeh server has started
(imports, 50+ database connections: seconds under load). Chosen in that window, a page's
autoload.js found no server. The first heartbeat, sent once the server serves, sets ready_at;
choose_worker() only picks ready workers. (A rolling restart waits for it too: app.ops.roll.)

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
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
            WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl) {ready}
            ORDER BY c.sessions + c.pending, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
            LIMIT 1)
        RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at;
    END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute("ALTER TABLE bokeh_workers ADD COLUMN ready_at timestamptz")
    op.execute("UPDATE bokeh_workers SET ready_at = heartbeat_at")  # rows of running workers
    op.execute(CHOOSE.format(ready="AND c.ready_at IS NOT NULL"))


def downgrade() -> None:
    op.execute(CHOOSE.format(ready=""))
    op.execute("ALTER TABLE bokeh_workers DROP COLUMN ready_at")
