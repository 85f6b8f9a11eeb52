#!/usr/bin/env bash
# Install what `make run` / `make test` need, or say exactly what to do when we cannot.
#   scripts/bootstrap.sh run    virtualenv + packages, nginx, PostgreSQL binaries
#   scripts/bootstrap.sh test   the same, plus test packages and Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

APT_UPDATED=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        die "missing Debian package(s): $*. Install them as root: sudo apt-get install -y $*"
    fi
    command -v apt-get >/dev/null || die "missing $* and no apt-get here; install them with your package manager"
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed; check network access to the Debian mirrors"
        APT_UPDATED=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

# Python 3.11: bokeh 3.9 / panel 1.9 are the newest that run on it (3.10/1.10 need 3.12).
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null \
    || die "need Python 3.11 as '$PYTHON' (found: $("$PYTHON" --version 2>&1 || echo none)); set PYTHON=/path/to/python3.11"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a virtualenv (Debian: apt-get install python3-venv)"
fi
EXTRAS=""
[ "$MODE" = test ] && EXTRAS="[test]"
STAMP="$VENV/.installed-$MODE-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
    say "installing Python packages$EXTRAS"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".$EXTRAS" \
        || die "pip install failed; see the messages above"
    touch "$STAMP"
fi

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
if [ -z "${DATABASE_URL:-}" ] || [ "$MODE" = test ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v pg_config >/dev/null \
        || [ -n "${PG_BIN:-}" ] || apt_install postgresql
fi
if [ "$MODE" = test ]; then
    command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || apt_install chromium
fi
exit 0
