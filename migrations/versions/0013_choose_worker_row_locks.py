"""choose_worker() without a global lock: concurrent page loads take different workers' rows.

Until now every choice took one advisory lock for its statement (migration 0003), so page
loads chose their workers one at a time. In a burst the lock's holder often waits for a CPU
with the lock held, and every other page waits behind it: in `make bench` (b), 200 page loads
at once on 2 cores, a choice averaged 3.5 ms, nearly all of it queueing for the lock, and the
last page of the burst (which starts the last query) came that much later.

Now a choice locks only the row of the worker it takes, and a concurrent choice skips a row
that is being taken (FOR UPDATE SKIP LOCKED) and takes the next best: a burst is still dealt
round the workers by pending sessions, several choices at a time. Only when every eligible
row is being taken does a choice wait, for the best row; the wait ends when that row's
UPDATE commits (one statement on an autocommit connection). `p_lock` is unused and stays in
the signature for the Flask workers of the previous release during a rolling deploy.

Revision ID: 0013
Revises: 0012
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Migration 0012's LOST_MARK_TTL_S, unchanged: a lost host's mark is refreshed every sweep
# round, and 10 s outlasts a few missed rounds. (Migrations are snapshots: no import.)
LOST_MARK_TTL_S = 10

ELIGIBLE = """
            SELECT c.id FROM bokeh_workers c
            WHERE c.heartbeat_at > now() - make_interval(secs => p_ttl) AND c.ready_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM edge_lost_hosts l
                              WHERE l.host = c.host AND l.marked_at > now() - make_interval(secs => %d))
            ORDER BY (c.id = p_avoid), c.pending, c.sessions, (c.id = p_prefer) DESC, (c.host = p_host) DESC, c.id
            LIMIT 1 FOR UPDATE OF c""" % LOST_MARK_TTL_S

TAKE = """
        UPDATE bokeh_workers w SET pending = w.pending + 1, pending_at = now()
        WHERE w.id = ({eligible}{skip})
        RETURNING w.id, w.host, w.port, w.pid, w.sessions + w.pending, w.started_at, w.heartbeat_at"""

CHOOSE = f"""
    CREATE OR REPLACE FUNCTION choose_worker(p_lock bigint, p_ttl double precision, p_prefer integer, p_host text,
                                             p_avoid integer)
    RETURNS TABLE (id integer, host varchar, port integer, pid integer, sessions integer,
                   started_at timestamptz, heartbeat_at timestamptz) AS $$
    BEGIN
        -- The best worker no concurrent choice is taking.
        RETURN QUERY {TAKE.format(eligible=ELIGIBLE, skip=" SKIP LOCKED")};
        IF FOUND THEN
            RETURN;
        END IF;
        -- Every eligible row is being taken (or there is none): wait for the best one.
        RETURN QUERY {TAKE.format(eligible=ELIGIBLE, skip="")};
    END $$ LANGUAGE plpgsql
"""

# Migration 0012's function: one choice at a time under the advisory lock.
PREVIOUS = """
    CREATE OR REPLACE FUNCTION choose_worker(p_lock bigint, p_ttl double precision, p_prefer integer, p_host text,
                                             p_avoid integer)
    RETURNS TABLE (id integer, host varchar, port integer, pid integer, sessions integer,
                   started_at timestamptz, heartbeat_at timestamptz) AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(p_lock);
        RETURN QUERY {take};
    END $$ LANGUAGE plpgsql
""".format(take=TAKE.format(eligible=ELIGIBLE.replace(" FOR UPDATE OF c", ""), skip=""))


def upgrade() -> None:
    op.execute(CHOOSE)


def downgrade() -> None:
    op.execute(PREVIOUS)
