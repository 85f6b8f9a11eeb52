"""choose_worker() can be told which worker a page just lost, and chooses it last.

A chart whose worker was killed re-embeds through Flask within a second. Until the gunicorn
master's child_exit has deleted the dead worker's row (or its heartbeat has aged out, when a
host vanished), that row still looks live and may be chosen, and the page's next request
then meets a 502 (tests/browser/test_recovery.py saw it once in three runs). The page knows
which worker it lost and says so (`?lost=w7`); that worker sorts after every other live one.
Chosen last, not excluded: on a site whose only live worker it is, trying it again is still
the page's best chance.

The four-argument function stays, for the Flask workers of the previous release during a
rolling deploy.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

CHOOSE = """
    CREATE OR REPLACE FUNCTION choose_worker(p_lock bigint, p_ttl double precision, p_prefer integer, p_host text,
                                             p_avoid integer)
    RETURNS TABLE (id integer, host varchar, port integer, pid integer, sessions integer,
                   started_at timestamptz, heartbeat_at timestamptz) AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(p_lock);
        RETURN QUERY
        UPDATE bokeh_workers w SET pending = w.pending + 1, pending_at = now()
        WHERE w.id = (
            SELECT c.id FROM bokeh_workers c
            WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl) AND c.ready_at IS NOT NULL
            ORDER BY (c.id = p_avoid), c.pending, c.sessions, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
            LIMIT 1)
        RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at;
    END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute(CHOOSE)


def downgrade() -> None:
    op.execute("DROP FUNCTION choose_worker(bigint, double precision, integer, text, integer)")
