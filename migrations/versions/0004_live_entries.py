"""Live updates: every new happiness entry notifies the workers in its own transaction, carries
the id of the transaction that wrote it, and expires the cached query results it changes.

- `txid` (xid8, the writing transaction): a query result records the snapshot it was read in
  (`pg_current_snapshot()`), and a worker applies a new entry to a chart only when the entry
  is not visible in that snapshot, so an entry racing a chart's opening query is shown
  exactly once, whatever the order of commit, notification and result.
- The trigger's NOTIFY is sent at commit and never for a rolled-back write; its payload is
  the row id, not the data (NOTIFY payloads stop at 8000 bytes, and a worker reads each row
  once for all its sessions).
- The same trigger expires fresh cached results (query_results.fresh_until), so a cached
  `teams` aggregate is never served after a write that changes it.
- `ix_entries_created_at`: a worker whose LISTEN connection dropped re-reads what it may
  have missed by time and id.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE happiness_entries ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX ix_entries_created_at ON happiness_entries (created_at)")
    op.execute("""
        CREATE FUNCTION happiness_entry_inserted() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('happiness_entries', NEW.id::text);
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER happiness_entry_notify AFTER INSERT ON happiness_entries
        FOR EACH ROW EXECUTE FUNCTION happiness_entry_inserted()
    """)
    op.execute("""
        CREATE FUNCTION happiness_entries_expire_cache() RETURNS trigger AS $$
        BEGIN
            UPDATE query_results SET fresh_until = now() - interval '1 microsecond' WHERE fresh_until >= now();
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER happiness_entries_expire_cache AFTER INSERT ON happiness_entries
        FOR EACH STATEMENT EXECUTE FUNCTION happiness_entries_expire_cache()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER happiness_entries_expire_cache ON happiness_entries")
    op.execute("DROP FUNCTION happiness_entries_expire_cache()")
    op.execute("DROP TRIGGER happiness_entry_notify ON happiness_entries")
    op.execute("DROP FUNCTION happiness_entry_inserted()")
    op.execute("DROP INDEX ix_entries_created_at")
    op.execute("ALTER TABLE happiness_entries DROP COLUMN txid")
