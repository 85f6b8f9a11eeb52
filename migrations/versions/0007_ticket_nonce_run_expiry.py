"""Two races of the query engine, closed.

- query_tickets.nonce: a worker names its ticket before inserting it, so a query cancelled
  while its place in line was being taken (the INSERT done, the reply lost to the
  cancellation) still gives the place back: by nonce, whether the reply came or not.
- query_expire(run, secs): a follower whose leader has run longer than any statement may
  (statement_timeout plus a margin) drops that run and claims again, instead of waiting
  without bound for a leader that died without its row going (a worker whose task failed).

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE query_tickets ADD COLUMN nonce bigint")
    op.execute("CREATE UNIQUE INDEX ix_query_tickets_nonce ON query_tickets (nonce)")
    op.execute("""
        CREATE FUNCTION query_expire(p_run bigint, p_secs double precision) RETURNS boolean AS $$
            WITH d AS (DELETE FROM query_runs WHERE run_id = p_run
                       AND started_at < now() - make_interval(secs => p_secs) RETURNING run_id)
            SELECT count(*) > 0 FROM d
        $$ LANGUAGE sql
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION query_expire(bigint, double precision)")
    op.execute("DROP INDEX ix_query_tickets_nonce")
    op.execute("ALTER TABLE query_tickets DROP COLUMN nonce")
