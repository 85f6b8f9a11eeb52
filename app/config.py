"""Settings, read once from the environment and validated before anything starts.

Every process of the site (gunicorn master and workers, the edge, the launcher)
builds its `Settings` from the same environment, so they agree on secrets and ports.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from typing import Mapping

DEV_ENVIRONMENTS = frozenset({"dev", "demo", "test"})

# Known-insecure values: accepted in dev so `make run` works on a fresh clone,
# refused everywhere else.
DEV_SECRET_KEY = "dev-only-flask-secret-not-for-production"
DEV_BOKEH_SECRET_KEY = "dev-only-bokeh-secret-not-for-production-0123456789"
INSECURE_SECRETS = frozenset({"", "changeme", "secret", "dev", DEV_SECRET_KEY, DEV_BOKEH_SECRET_KEY})

# bokeh.util.token signs with HMAC-SHA256; bokeh itself demands 32+ bytes.
MIN_BOKEH_SECRET_LENGTH = 32


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The site's settings. Field names are the environment variables, lower-cased."""

    app_env: str = "production"
    secret_key: str = ""
    bokeh_secret_key: str = ""
    database_url: str = ""
    web_concurrency: int = 4
    gunicorn_bind: str = "127.0.0.1:8000"
    gunicorn_threads: int = 8
    public_port: int = 8080
    # host[:port] values browsers use to reach the site; websocket origins are checked against them.
    public_hosts: tuple[str, ...] = ()
    bokeh_port_range: tuple[int, int] = (5100, 5199)
    # Address nginx uses to reach this host's Bokeh servers; also the registry's host key.
    bokeh_host: str = "127.0.0.1"
    bokeh_bind_address: str = "127.0.0.1"
    # A heartbeat every 5 s and a 20 s TTL: a worker must miss three beats to be reclaimed.
    registry_heartbeat_seconds: float = 5.0
    registry_ttl_seconds: float = 20.0
    # Long enough for autoload.js and the websocket to follow the page, short enough that
    # a token copied out of a page is soon useless.
    session_token_ttl_seconds: int = 120
    # Query connections per worker: DB_POOL_SIZE opened at start and kept; up to DB_POOL_OVERFLOW
    # more opened for a burst while PostgreSQL's max_connections leaves room (shared by all
    # workers, see bokeh_apps.queries.slots), closed again after 30 s idle. 0: no overflow.
    db_pool_size: int = 50
    db_pool_overflow: int = 50
    statement_timeout_seconds: float = 60.0
    # Long queries one user may have running at once; more wait in a queue ("queued, 2nd").
    user_query_limit: int = 4
    # Result cache per dashboard, seconds; 0 is off. Teams aggregates the whole history and
    # changes slowly; slow-query is for load testing, where a cache would hide the load.
    query_cache_ttl: tuple[tuple[str, float], ...] = (("teams", 60.0),)
    # The page starts its dashboard's opening query on the chosen worker (bokeh_apps.queries.prefetch),
    # so it runs while the browser loads BokehJS; the session adopts it. A page whose
    # session never comes has its query cancelled after this many seconds. 0: off.
    query_prefetch_seconds: float = 10.0
    # Serve slow-query-blocking, the synchronous baseline `make bench` compares against.
    blocking_baseline: bool = False
    # Bokeh validates every new session's document (about 4 ms of CPU for a small one, a tenth
    # of a session's cost). The apps are validated in dev and by the tests, so production
    # skips it; the setting exists to turn it back on when a dashboard misbehaves there.
    bokeh_validate_doc: bool = False
    nginx_bin: str = "nginx"
    seed_demo: bool = False
    # Cookies only over HTTPS. On outside dev: production sits behind TLS (browsers treat
    # http://localhost as secure too, so a local production-mode site still works).
    secure_cookies: bool = True
    # Failed logins allowed per account and per address in LOGIN_WINDOW_SECONDS, counted in
    # PostgreSQL so that every worker and host enforces the same limit.
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    login_window_seconds: int = 900
    # Where gunicorn's workers keep their metrics (prometheus-client's multiprocess files);
    # the process starting gunicorn sets it (make run: under its run dir; compose: a tmpfs).
    prometheus_multiproc_dir: str = ""
    # Who may read /metrics without logging in as an admin: addresses or networks. Loopback
    # only by default: a Prometheus on the same host (or an SSH tunnel) works out of the box,
    # anything further needs naming, since the metrics describe the site's load and users.
    metrics_allowed_addresses: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    @property
    def is_dev(self) -> bool:
        return self.app_env in DEV_ENVIRONMENTS

    @property
    def bokeh_secret_bytes(self) -> bytes:
        return self.bokeh_secret_key.encode()

    def cache_ttl(self, dashboard: str) -> float:
        return dict(self.query_cache_ttl).get(dashboard, 0.0)

    @property
    def websocket_origins(self) -> list[str]:
        return list(self.public_hosts)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from `env` (default: os.environ); raise ConfigError on bad values."""
        env = os.environ if env is None else env
        app_env = env.get("APP_ENV", "production").strip().lower()
        is_dev = app_env in DEV_ENVIRONMENTS
        public_port = _int(env, "PUBLIC_PORT", 8080, 1, 65535)
        hosts = env.get("PUBLIC_HOSTS", "").strip()
        public_hosts = tuple(h.strip().lower() for h in hosts.split(",") if h.strip()) or (
            f"127.0.0.1:{public_port}",
            f"localhost:{public_port}",
        )
        settings = cls(
            app_env=app_env,
            secret_key=env.get("SECRET_KEY", DEV_SECRET_KEY if is_dev else ""),
            bokeh_secret_key=env.get("BOKEH_SECRET_KEY", DEV_BOKEH_SECRET_KEY if is_dev else ""),
            database_url=env.get("DATABASE_URL", "").strip(),
            web_concurrency=_int(env, "WEB_CONCURRENCY", 4, 1, 64),
            gunicorn_bind=env.get("GUNICORN_BIND", "127.0.0.1:8000"),
            gunicorn_threads=_int(env, "GUNICORN_THREADS", 8, 1, 256),
            public_port=public_port,
            public_hosts=public_hosts,
            bokeh_port_range=_port_range(env.get("BOKEH_PORT_RANGE", "5100-5199")),
            bokeh_host=env.get("BOKEH_HOST", "127.0.0.1"),
            bokeh_bind_address=env.get("BOKEH_BIND_ADDRESS", env.get("BOKEH_HOST", "127.0.0.1")),
            registry_heartbeat_seconds=_float(env, "REGISTRY_HEARTBEAT_SECONDS", 5.0, 0.2, 300),
            registry_ttl_seconds=_float(env, "REGISTRY_TTL_SECONDS", 20.0, 1, 3600),
            session_token_ttl_seconds=_int(env, "SESSION_TOKEN_TTL_SECONDS", 120, 5, 3600),
            db_pool_size=_int(env, "DB_POOL_SIZE", 50, 1, 1000),
            db_pool_overflow=_int(env, "DB_POOL_OVERFLOW", 50, 0, 1000),
            statement_timeout_seconds=_float(env, "STATEMENT_TIMEOUT_SECONDS", 60.0, 0.1, 86400),
            user_query_limit=_int(env, "USER_QUERY_LIMIT", 4, 1, 10000),
            query_cache_ttl=_cache_ttl(env.get("QUERY_CACHE_TTL", "teams=60")),
            query_prefetch_seconds=_float(env, "QUERY_PREFETCH_SECONDS", 10.0, 0, 600),
            blocking_baseline=_bool(env, "BLOCKING_BASELINE", False),
            bokeh_validate_doc=_bool(env, "BOKEH_VALIDATE_DOC", is_dev),
            nginx_bin=env.get("NGINX_BIN", "nginx"),
            seed_demo=_bool(env, "SEED_DEMO", is_dev),
            secure_cookies=_bool(env, "SECURE_COOKIES", not is_dev),
            login_failures_per_account=_int(env, "LOGIN_FAILURES_PER_ACCOUNT", 5, 1, 10000),
            login_failures_per_address=_int(env, "LOGIN_FAILURES_PER_ADDRESS", 20, 1, 100000),
            login_window_seconds=_int(env, "LOGIN_WINDOW_SECONDS", 900, 1, 86400),
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", "").strip(),
            metrics_allowed_addresses=_networks(env.get("METRICS_ALLOWED_ADDRESSES"), "METRICS_ALLOWED_ADDRESSES",
                                                ("127.0.0.0/8", "::1/128")),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Fail fast: outside dev, secrets must be set and not the known defaults."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/db)")
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        if not self.is_dev:
            for name in ("secret_key", "bokeh_secret_key"):
                if getattr(self, name).strip() in INSECURE_SECRETS:
                    raise ConfigError(
                        f"{name.upper()} is missing or a known default; set a random value "
                        f"(python -c 'import secrets; print(secrets.token_urlsafe(48))') "
                        f"or APP_ENV=dev for local development"
                    )
        if len(self.bokeh_secret_key) < MIN_BOKEH_SECRET_LENGTH:
            raise ConfigError(f"BOKEH_SECRET_KEY must be at least {MIN_BOKEH_SECRET_LENGTH} characters")
        if self.registry_ttl_seconds <= 2 * self.registry_heartbeat_seconds:
            raise ConfigError("REGISTRY_TTL_SECONDS must be more than twice REGISTRY_HEARTBEAT_SECONDS")

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bokeh_port_range":
                value = f"{value[0]}-{value[1]}"
            elif f.name == "public_hosts":
                value = ",".join(value)
            elif f.name == "metrics_allowed_addresses":
                value = ",".join(value) or "none"
            elif f.name == "query_cache_ttl":
                value = ",".join(f"{k}={v:g}" for k, v in value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[f.name.upper()] = str(value)
        return out


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _port_range(raw: str) -> tuple[int, int]:
    try:
        lo_s, hi_s = raw.split("-")
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ConfigError(f"BOKEH_PORT_RANGE must look like 5100-5199, got {raw!r}") from None
    if not (1024 <= lo <= hi <= 65535):
        raise ConfigError(f"BOKEH_PORT_RANGE must lie within 1024-65535 with low <= high, got {raw!r}")
    return lo, hi


def _networks(raw: str | None, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """'10.0.0.5,192.168.0.0/24,::1' -> normalized networks; empty or unset: `default`.
    'none' allows no address (admins only)."""
    if raw is None or not raw.strip():
        return default
    if raw.strip().lower() == "none":
        return ()
    out = []
    for item in (i.strip() for i in raw.split(",") if i.strip()):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name} must list addresses or networks like 127.0.0.1,10.0.0.0/8, "
                              f"got {item[:60]!r}") from None
    return tuple(out)


def _cache_ttl(raw: str) -> tuple[tuple[str, float], ...]:
    """'teams=60,slow-query=0' -> (("teams", 60.0), ("slow-query", 0.0))."""
    out: dict[str, float] = {}
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            seconds = float(value) if sep else float("nan")
        except ValueError:
            seconds = float("nan")
        if not name.strip() or not (0 <= seconds <= 86400):
            raise ConfigError(f"QUERY_CACHE_TTL must look like teams=60,slow-query=0 (0-86400 s), got {raw!r}")
        out[name.strip()] = seconds
    return tuple(out.items())
