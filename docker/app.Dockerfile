# The app image: gunicorn serving Flask, each worker embedding its own Bokeh server.
# Build context: the repository root (docker compose does this; by hand:
#   docker build -f docker/app.Dockerfile .).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv/app

# The site runs as this unprivileged user; the code and packages stay root-owned, read-only to it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app

# app/ops/prestart.py and app/edge/nginx.py find alembic.ini, migrations/ and nginx/ next to the app
# package, so the code runs from this checkout-shaped directory (PYTHONPATH above puts it
# first, ahead of the installed copy, for gunicorn too).
WORKDIR /srv/app

# Dependencies in their own layer, rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY app/ app/
COPY bokeh_apps/ bokeh_apps/
RUN pip install . && rm -rf build ./*.egg-info

COPY migrations/ migrations/
COPY nginx/ nginx/
COPY alembic.ini gunicorn.conf.py wsgi.py ./
COPY docker/prestart.sh docker/prestart.sh
RUN chmod 0755 docker/prestart.sh

USER app
# gunicorn (Flask) and the per-worker Bokeh servers (BOKEH_PORT_RANGE), reached by the edge.
EXPOSE 8000 5100-5199
ENTRYPOINT ["/srv/app/docker/prestart.sh"]
