"""Failed logins, counted per account and per address across every worker and host.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # UNLOGGED: a crash forgetting recent failures only resets a throttle.
    op.execute("""
        CREATE UNLOGGED TABLE login_failures (
            id bigserial PRIMARY KEY,
            username text NOT NULL,
            address text NOT NULL,
            at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX ix_login_failures_username ON login_failures (username, at)")
    op.execute("CREATE INDEX ix_login_failures_address ON login_failures (address, at)")


def downgrade() -> None:
    op.execute("DROP TABLE login_failures")
