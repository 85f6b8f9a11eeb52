#!/usr/bin/env bash
# Entrypoint of the app image: wait for PostgreSQL, migrate (+ seed in dev/demo), then
# exec gunicorn so it replaces this shell as the container's PID 1 and receives
# `docker stop`'s SIGTERM directly (graceful: workers drop their registry rows).
# Extra arguments are passed on to gunicorn.
set -euo pipefail

say() { printf 'prestart: %s\n' "$*" >&2; }

# The first non-loopback IPv4 address of this container: the one the edge's nginx reaches
# it on over the compose network. IPv6 is skipped because the generated nginx routes are
# written as http://HOST:PORT, which an unbracketed IPv6 address would break.
own_address() {
    local addr
    # shellcheck disable=SC2046  # word splitting wanted: one address per word
    for addr in $(hostname -i 2>/dev/null || true) $(hostname -I 2>/dev/null || true); do
        case "$addr" in
            127.*|*:*) continue ;;
        esac
        printf '%s\n' "$addr"
        return 0
    done
    return 1
}

# Each replica (docker compose up --scale app=N) registers its Bokeh servers under its own
# address, so BOKEH_HOST is worked out here, per container, and never fixed in compose.
if [ -z "${BOKEH_HOST:-}" ]; then
    BOKEH_HOST="$(own_address)" || { say "cannot find this container's IPv4 address; set BOKEH_HOST"; exit 1; }
fi
export BOKEH_HOST
# Listen on every interface: nginx comes from another container, the healthcheck from localhost.
export BOKEH_BIND_ADDRESS="${BOKEH_BIND_ADDRESS:-0.0.0.0}"
export GUNICORN_BIND="${GUNICORN_BIND:-0.0.0.0:8000}"
say "BOKEH_HOST=$BOKEH_HOST BOKEH_BIND_ADDRESS=$BOKEH_BIND_ADDRESS GUNICORN_BIND=$GUNICORN_BIND"

: "${DATABASE_URL:?DATABASE_URL is not set}"
say "waiting for the database (up to ${DB_WAIT_TIMEOUT:-60} s)"
python - <<'PY'
import os, sys, time

import psycopg2

deadline = time.monotonic() + float(os.environ.get("DB_WAIT_TIMEOUT", "60"))
while True:
    try:
        psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=3).close()
        break
    except psycopg2.OperationalError as exc:
        if time.monotonic() >= deadline:
            sys.exit(f"prestart: database still unreachable: {str(exc).strip()}")
        time.sleep(1)
PY

say "migrating (and seeding when SEED_DEMO is on)"
python -m app.ops.prestart

exec gunicorn -c gunicorn.conf.py "$@"
