"""query_finish_alone(run, ttl): a leader nobody follows ends its run without storing the result.

Every run used to end with query_finish(), which stores the result as JSON (kept 30 s for
followers reading it by run id) even when no other worker followed the run and no cache
is on: an encode, an INSERT and a later purge per query for nobody (issue 12). This ends
the run instead when the cache is off and the run's only waiter is its leader, in one
statement: the DELETE takes the run's row lock, so a worker claiming at that moment either
joined before (waiters > 1: nothing is deleted, the leader stores the result as before) or
finds the run gone and starts its own, which is what a claim just after a finished,
uncached run always did.

Revision ID: 0010
Revises: 0009
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION query_finish_alone(p_run bigint, p_ttl double precision) RETURNS boolean AS $$
            WITH d AS (DELETE FROM query_runs WHERE run_id = p_run AND waiters <= 1 AND p_ttl <= 0
                       RETURNING run_id)
            SELECT count(*) > 0 FROM d
        $$ LANGUAGE sql
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION query_finish_alone(bigint, double precision)")
