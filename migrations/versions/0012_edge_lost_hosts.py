"""choose_worker() skips the workers of a host the edge cannot reach (edge_lost_hosts).

When the edge's sweep finds a host unreachable it unroutes the host's workers and deletes
their rows. If the host still reaches PostgreSQL (a partition between it and the edge only),
its workers' heartbeats put the rows back and make them ready again, and Flask would choose
them for pages nginx does not route: every such page's chart fails once and is retried. The
edge now also writes the host into edge_lost_hosts, refreshing it on every sweep round while
the host stays lost and deleting it once the host answers; choose_worker() passes over the
workers of a host marked within the last LOST_MARK_TTL seconds. The TTL is for an edge that
died with hosts marked: its marks lapse instead of shutting those hosts out for good.

Revision ID: 0012
Revises: 0011
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# A lost host's mark is refreshed every sweep round (at most 1.6 s apart: app/edge/sweep.py);
# 10 s outlasts a few missed rounds (the edge reconnecting to the database).
LOST_MARK_TTL_S = 10

LOST = """
              AND NOT EXISTS (SELECT 1 FROM edge_lost_hosts l
                              WHERE l.host = c.host AND l.marked_at > now() - make_interval(secs => %d))""" % LOST_MARK_TTL_S

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
            WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl) AND c.ready_at IS NOT NULL{lost}
            ORDER BY (c.id = p_avoid), c.pending, c.sessions, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
            LIMIT 1)
        RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at;
    END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute("CREATE TABLE edge_lost_hosts (host varchar PRIMARY KEY, marked_at timestamptz NOT NULL DEFAULT now())")
    op.execute(CHOOSE.format(lost=LOST))


def downgrade() -> None:
    op.execute(CHOOSE.format(lost=""))  # 0011's function
    op.execute("DROP TABLE edge_lost_hosts")
