"""Query service: per-user query limits, and the cross-worker tables behind the per-user
queue and query coalescing.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the site's USER_QUERY_LIMIT. Set for load-test accounts by `python -m app.loadtest accounts`.
    op.add_column("users", sa.Column("query_limit", sa.Integer, nullable=True))
    op.create_check_constraint("query_limit_positive", "users", "query_limit IS NULL OR query_limit BETWEEN 1 AND 10000")
    # The three tables below are UNLOGGED: they describe queries in flight and a short-lived
    # cache, which a crash makes meaningless anyway, and they are written on every query.
    # Rows go with their worker (ON DELETE CASCADE), so a killed worker leaves no queue slot
    # taken and no run that nobody will finish.
    op.execute("""
        CREATE UNLOGGED TABLE query_tickets (
            id bigserial PRIMARY KEY,
            user_id integer NOT NULL,
            worker_id integer NOT NULL REFERENCES bokeh_workers(id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE INDEX ix_query_tickets_user ON query_tickets (user_id, id)")
    op.execute("""
        CREATE UNLOGGED TABLE query_runs (
            key text PRIMARY KEY,
            run_id bigint NOT NULL,
            worker_id integer NOT NULL REFERENCES bokeh_workers(id) ON DELETE CASCADE,
            -- Workers (not sessions) that still want the result; the run is cancelled at 0.
            waiters integer NOT NULL DEFAULT 1,
            started_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute("CREATE SEQUENCE query_run_ids")
    op.execute("""
        CREATE UNLOGGED TABLE query_results (
            run_id bigint PRIMARY KEY,
            key text NOT NULL,
            payload text,
            error text,
            finished_at timestamptz NOT NULL DEFAULT now(),
            -- Until when a new request may reuse it (the cache TTL; = finished_at when off).
            fresh_until timestamptz NOT NULL,
            -- Followers that were waiting read it by run_id until this time.
            keep_until timestamptz NOT NULL
        )
    """)
    op.execute("CREATE INDEX ix_query_results_key ON query_results (key, fresh_until)")
    # One round trip per step of a shared run (bokeh_apps/queries/coalescer.py), each atomic:
    for sql in FUNCTIONS:
        op.execute(sql)


RUNS_CHANNEL = "query_runs"
FUNCTIONS = (
    # A fresh cached result, else join the run in flight (one more waiting worker), else
    # start one. Two workers racing to start: the loser's INSERT waits on the winner's row,
    # does nothing, and the loop makes it join the winner's run.
    """
    CREATE FUNCTION query_claim(p_key text, p_worker integer)
    RETURNS TABLE (role text, run_id bigint, payload text, error text) AS $$
    DECLARE v_run bigint;
    BEGIN
        RETURN QUERY SELECT 'cached'::text, r.run_id, r.payload, r.error FROM query_results r
            WHERE r.key = p_key AND r.fresh_until > now() AND r.error IS NULL
            ORDER BY r.finished_at DESC LIMIT 1;
        IF FOUND THEN RETURN; END IF;
        LOOP
            UPDATE query_runs q SET waiters = q.waiters + 1 WHERE q.key = p_key RETURNING q.run_id INTO v_run;
            IF FOUND THEN
                RETURN QUERY SELECT 'follower'::text, v_run, NULL::text, NULL::text;
                RETURN;
            END IF;
            INSERT INTO query_runs (key, run_id, worker_id) VALUES (p_key, nextval('query_run_ids'), p_worker)
                ON CONFLICT (key) DO NOTHING RETURNING query_runs.run_id INTO v_run;
            IF FOUND THEN
                RETURN QUERY SELECT 'leader'::text, v_run, NULL::text, NULL::text;
                RETURN;
            END IF;
        END LOOP;
    END $$ LANGUAGE plpgsql
    """,
    # A worker no longer wants the result. At zero the leader is told to stop.
    f"""
    CREATE FUNCTION query_leave(p_run bigint) RETURNS integer AS $$
    DECLARE v_left integer;
    BEGIN
        UPDATE query_runs SET waiters = waiters - 1 WHERE run_id = p_run RETURNING waiters INTO v_left;
        IF NOT FOUND THEN RETURN -1; END IF;
        IF v_left <= 0 THEN PERFORM pg_notify('{RUNS_CHANNEL}', 'cancel:' || p_run); END IF;
        RETURN v_left;
    END $$ LANGUAGE plpgsql
    """,
    # The leader drops a run nobody wants (false if a worker joined meanwhile).
    f"""
    CREATE FUNCTION query_drop(p_run bigint) RETURNS boolean AS $$
    BEGIN
        DELETE FROM query_runs WHERE run_id = p_run AND waiters <= 0;
        IF NOT FOUND THEN RETURN false; END IF;
        PERFORM pg_notify('{RUNS_CHANNEL}', 'gone:' || p_run);
        RETURN true;
    END $$ LANGUAGE plpgsql
    """,
    # The leader publishes the result (or the error every follower should show).
    f"""
    CREATE FUNCTION query_finish(p_key text, p_run bigint, p_payload text, p_error text,
                                 p_ttl double precision, p_keep double precision) RETURNS void AS $$
    BEGIN
        INSERT INTO query_results (run_id, key, payload, error, fresh_until, keep_until)
            VALUES (p_run, p_key, p_payload, p_error,
                    now() + make_interval(secs => CASE WHEN p_error IS NULL THEN p_ttl ELSE 0 END),
                    now() + make_interval(secs => greatest(p_ttl, p_keep)))
            ON CONFLICT (run_id) DO NOTHING;
        DELETE FROM query_runs WHERE run_id = p_run;
        PERFORM pg_notify('{RUNS_CHANNEL}', 'done:' || p_run);
    END $$ LANGUAGE plpgsql
    """,
    # A follower that may have missed a notification asks where its run is.
    """
    CREATE FUNCTION query_poll(p_run bigint) RETURNS TABLE (state text, payload text, error text) AS $$
    BEGIN
        RETURN QUERY SELECT 'done'::text, r.payload, r.error FROM query_results r WHERE r.run_id = p_run;
        IF FOUND THEN RETURN; END IF;
        RETURN QUERY SELECT CASE WHEN EXISTS (SELECT 1 FROM query_runs WHERE run_id = p_run)
                                 THEN 'running' ELSE 'gone' END, NULL::text, NULL::text;
    END $$ LANGUAGE plpgsql
    """,
)


def downgrade() -> None:
    for fn in ("query_claim(text, integer)", "query_leave(bigint)", "query_drop(bigint)",
               "query_finish(text, bigint, text, text, double precision, double precision)", "query_poll(bigint)"):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
    op.execute("DROP TABLE IF EXISTS query_results")
    op.execute("DROP SEQUENCE IF EXISTS query_run_ids")
    op.execute("DROP TABLE IF EXISTS query_runs")
    op.execute("DROP TABLE IF EXISTS query_tickets")
    op.drop_constraint("query_limit_positive", "users")
    op.drop_column("users", "query_limit")
