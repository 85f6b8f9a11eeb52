# The edge image: nginx in the foreground under `python -m app.edge`, which regenerates the
# /bokeh/<worker>/ routes from the PostgreSQL port registry (LISTEN/NOTIFY).
# Build context: the repository root (docker build -f docker/edge.Dockerfile .).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv/app

# Debian's nginx (bookworm: error log compiled to stderr, /etc/nginx/mime.types from nginx-common).
# iproute2's ss, allowed CAP_NET_ADMIN (compose grants it to the container): the unprivileged
# edge ends nginx's connections to a lost worker with it (app/edge/connections.py).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light iproute2 libcap2-bin \
    && setcap cap_net_admin+ep "$(command -v ss)" \
    && rm -rf /var/lib/apt/lists/*

# nginx runs unprivileged: no `user` directive is rendered, pid and temp files live in
# EDGE_RUN_DIR, and port 8080 needs no privilege. BokehJS/Panel static files are served
# straight from site-packages, which this user can read.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin edge

WORKDIR /srv/app

COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY app/ app/
COPY bokeh_apps/ bokeh_apps/
RUN pip install . && rm -rf build ./*.egg-info
# app/edge/nginx.py renders nginx.conf from the templates next to the app package.
COPY nginx/ nginx/

# FLASK_UPSTREAMS names the compose service: Docker's DNS answers with every replica's
# address, and nginx resolves it again on each reload (every registry change).
ENV EDGE_LISTEN=0.0.0.0:8080 \
    FLASK_UPSTREAMS=app:8000 \
    EDGE_RUN_DIR=/tmp/happiness-edge \
    EDGE_ACCESS_LOG=/dev/stdout

USER edge
EXPOSE 8080
CMD ["python", "-m", "app.edge"]
