"""Unit tests for app.config.Settings.from_env: defaults, validation and round-trips."""
from __future__ import annotations

import pytest

from app.config import (
    DEV_BOKEH_SECRET_KEY,
    DEV_SECRET_KEY,
    MIN_BOKEH_SECRET_LENGTH,
    ConfigError,
    Settings,
)

GOOD_SECRET = "s" * 48
GOOD_BOKEH_SECRET = "b" * 48
DB_URL = "postgresql://user:pass@db:5432/happiness"


def prod_env(**overrides: str) -> dict[str, str]:
    """A minimal valid production environment, with overrides (None removes a key)."""
    env = {"SECRET_KEY": GOOD_SECRET, "BOKEH_SECRET_KEY": GOOD_BOKEH_SECRET, "DATABASE_URL": DB_URL}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def dev_env(**overrides: str) -> dict[str, str]:
    env = {"APP_ENV": "dev", "DATABASE_URL": DB_URL}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_defaults_in_production():
    s = Settings.from_env(prod_env())
    assert s.app_env == "production"
    assert s.is_dev is False
    assert s.secret_key == GOOD_SECRET
    assert s.bokeh_secret_key == GOOD_BOKEH_SECRET
    assert s.bokeh_secret_bytes == GOOD_BOKEH_SECRET.encode()
    assert s.database_url == DB_URL
    assert s.web_concurrency == 4
    assert s.gunicorn_bind == "127.0.0.1:8000"
    assert s.gunicorn_threads == 8
    assert s.public_port == 8080
    assert s.public_hosts == ("127.0.0.1:8080", "localhost:8080")
    assert s.bokeh_port_range == (5100, 5199)
    assert s.bokeh_host == "127.0.0.1"
    assert s.bokeh_bind_address == "127.0.0.1"
    assert s.registry_heartbeat_seconds == 5.0
    assert s.registry_ttl_seconds == 20.0
    assert s.session_token_ttl_seconds == 120
    assert s.db_pool_size == 50
    assert s.statement_timeout_seconds == 60.0
    assert s.nginx_bin == "nginx"
    assert s.seed_demo is False
    assert s.bokeh_validate_doc is False


def test_bokeh_document_validation_is_on_in_dev_and_can_be_set():
    assert Settings.from_env(dev_env()).bokeh_validate_doc is True
    assert Settings.from_env(dev_env(BOKEH_VALIDATE_DOC="0")).bokeh_validate_doc is False
    assert Settings.from_env(prod_env(BOKEH_VALIDATE_DOC="true")).bokeh_validate_doc is True
    with pytest.raises(ConfigError, match="BOKEH_VALIDATE_DOC"):
        Settings.from_env(prod_env(BOKEH_VALIDATE_DOC="sometimes"))


@pytest.mark.parametrize("app_env", [None, "production", "PRODUCTION", " production "])
@pytest.mark.parametrize("var", ["SECRET_KEY", "BOKEH_SECRET_KEY"])
def test_production_refuses_missing_secret(app_env, var):
    env = prod_env(APP_ENV=app_env, **{var: None})
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert str(exc.value).startswith(f"{var} is missing or a known default")


@pytest.mark.parametrize("var, value", [
    ("SECRET_KEY", DEV_SECRET_KEY),
    ("SECRET_KEY", DEV_BOKEH_SECRET_KEY),
    ("SECRET_KEY", "changeme"),
    ("SECRET_KEY", "  changeme  "),
    ("SECRET_KEY", ""),
    ("BOKEH_SECRET_KEY", DEV_BOKEH_SECRET_KEY),
    ("BOKEH_SECRET_KEY", DEV_SECRET_KEY),
    ("BOKEH_SECRET_KEY", "changeme"),
])
def test_production_refuses_known_insecure_secrets(var, value):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(prod_env(**{var: value}))
    assert str(exc.value).startswith(f"{var} is missing or a known default")


@pytest.mark.parametrize("app_env", ["dev", "demo", "test", "DEV"])
def test_dev_accepts_missing_secrets(app_env):
    s = Settings.from_env(dev_env(APP_ENV=app_env))
    assert s.is_dev is True
    assert s.app_env == app_env.lower()
    assert s.secret_key == DEV_SECRET_KEY
    assert s.bokeh_secret_key == DEV_BOKEH_SECRET_KEY
    assert s.seed_demo is True


def test_dev_accepts_insecure_secret_values():
    s = Settings.from_env(dev_env(SECRET_KEY="changeme"))
    assert s.secret_key == "changeme"


@pytest.mark.parametrize("env", [prod_env(DATABASE_URL=None), prod_env(DATABASE_URL="   "),
                                 dev_env(DATABASE_URL=None)])
def test_missing_database_url(env):
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set"):
        Settings.from_env(env)


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "sqlite:///x.db", "localhost:5432"])
def test_invalid_database_url(url):
    with pytest.raises(ConfigError, match=r"^DATABASE_URL must be a postgresql:// URL"):
        Settings.from_env(prod_env(DATABASE_URL=url))


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_valid_database_url_schemes(url):
    assert Settings.from_env(prod_env(DATABASE_URL=url)).database_url == url


@pytest.mark.parametrize("env", [prod_env(BOKEH_SECRET_KEY="x" * (MIN_BOKEH_SECRET_LENGTH - 1)),
                                 dev_env(BOKEH_SECRET_KEY="short")])
def test_short_bokeh_secret(env):
    with pytest.raises(ConfigError, match=r"^BOKEH_SECRET_KEY must be at least 32 characters"):
        Settings.from_env(env)


def test_bokeh_secret_of_exactly_min_length_is_accepted():
    key = "k" * MIN_BOKEH_SECRET_LENGTH
    assert Settings.from_env(prod_env(BOKEH_SECRET_KEY=key)).bokeh_secret_key == key


@pytest.mark.parametrize("raw, expected", [
    ("abc", "must look like 5100-5199"),
    ("5100", "must look like 5100-5199"),
    ("5100-5150-5199", "must look like 5100-5199"),
    ("5200-5100", "low <= high"),
    ("80-90", "within 1024-65535"),
    ("60000-70000", "within 1024-65535"),
])
def test_bad_port_range(raw, expected):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(prod_env(BOKEH_PORT_RANGE=raw))
    assert str(exc.value).startswith("BOKEH_PORT_RANGE")
    assert expected in str(exc.value)
    assert repr(raw) in str(exc.value)


def test_port_range_parsed():
    assert Settings.from_env(prod_env(BOKEH_PORT_RANGE="6000-6000")).bokeh_port_range == (6000, 6000)


@pytest.mark.parametrize("var, raw, expected", [
    ("WEB_CONCURRENCY", "x", "WEB_CONCURRENCY must be a whole number, got 'x'"),
    ("WEB_CONCURRENCY", "1.5", "WEB_CONCURRENCY must be a whole number, got '1.5'"),
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be between 1 and 64, got 0"),
    ("WEB_CONCURRENCY", "65", "WEB_CONCURRENCY must be between 1 and 64, got 65"),
    ("PUBLIC_PORT", "70000", "PUBLIC_PORT must be between 1 and 65535, got 70000"),
    ("SESSION_TOKEN_TTL_SECONDS", "4", "SESSION_TOKEN_TTL_SECONDS must be between 5 and 3600, got 4"),
    ("REGISTRY_HEARTBEAT_SECONDS", "fast", "REGISTRY_HEARTBEAT_SECONDS must be a number, got 'fast'"),
    ("SEED_DEMO", "maybe", "SEED_DEMO must be true or false, got 'maybe'"),
    ("QUERY_PREFETCH_SECONDS", "-1", "QUERY_PREFETCH_SECONDS must be between 0 and 600, got -1.0"),
])
def test_bad_numbers_and_flags(var, raw, expected):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(prod_env(**{var: raw}))
    assert str(exc.value) == expected


def test_empty_integer_falls_back_to_default():
    assert Settings.from_env(prod_env(WEB_CONCURRENCY="  ")).web_concurrency == 4


@pytest.mark.parametrize("heartbeat, ttl", [("5", "10"), ("5", "9"), ("1", "2")])
def test_ttl_must_exceed_twice_heartbeat(heartbeat, ttl):
    env = prod_env(REGISTRY_HEARTBEAT_SECONDS=heartbeat, REGISTRY_TTL_SECONDS=ttl)
    with pytest.raises(ConfigError, match=r"^REGISTRY_TTL_SECONDS must be more than twice"):
        Settings.from_env(env)


def test_ttl_just_above_twice_heartbeat_is_accepted():
    s = Settings.from_env(prod_env(REGISTRY_HEARTBEAT_SECONDS="5", REGISTRY_TTL_SECONDS="10.5"))
    assert (s.registry_heartbeat_seconds, s.registry_ttl_seconds) == (5.0, 10.5)


def test_public_hosts_parsing():
    s = Settings.from_env(prod_env(PUBLIC_HOSTS=" Happiness.Example.com , ,10.0.0.5:8443,"))
    assert s.public_hosts == ("happiness.example.com", "10.0.0.5:8443")
    assert s.websocket_origins == ["happiness.example.com", "10.0.0.5:8443"]


@pytest.mark.parametrize("hosts", [None, "", " , "])
def test_default_websocket_origins_follow_public_port(hosts):
    s = Settings.from_env(prod_env(PUBLIC_PORT="9443", PUBLIC_HOSTS=hosts))
    assert s.public_hosts == ("127.0.0.1:9443", "localhost:9443")
    assert s.websocket_origins == ["127.0.0.1:9443", "localhost:9443"]


def test_bokeh_bind_address_defaults_to_bokeh_host():
    s = Settings.from_env(prod_env(BOKEH_HOST="10.1.2.3"))
    assert (s.bokeh_host, s.bokeh_bind_address) == ("10.1.2.3", "10.1.2.3")
    s = Settings.from_env(prod_env(BOKEH_HOST="10.1.2.3", BOKEH_BIND_ADDRESS="0.0.0.0"))
    assert (s.bokeh_host, s.bokeh_bind_address) == ("10.1.2.3", "0.0.0.0")


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("ON", True),
                                           ("0", False), ("false", False), ("off", False)])
def test_seed_demo_flag(raw, expected):
    assert Settings.from_env(prod_env(SEED_DEMO=raw)).seed_demo is expected


@pytest.mark.parametrize("env", [
    prod_env(),
    dev_env(),
    prod_env(PUBLIC_HOSTS="a.example.com,b.example.com:8443", BOKEH_PORT_RANGE="6000-6099",
             WEB_CONCURRENCY="2", REGISTRY_HEARTBEAT_SECONDS="1.5", REGISTRY_TTL_SECONDS="7.25",
             STATEMENT_TIMEOUT_SECONDS="0.5", SEED_DEMO="yes", BOKEH_HOST="10.0.0.2",
             NGINX_BIN="/usr/sbin/nginx", APP_ENV="production"),
])
def test_as_env_round_trips(env):
    s = Settings.from_env(env)
    out = s.as_env()
    assert all(isinstance(v, str) for v in out.values())
    assert Settings.from_env(out) == s


def test_as_env_formats():
    out = Settings.from_env(prod_env(PUBLIC_HOSTS="a,b", SEED_DEMO="1")).as_env()
    assert out["BOKEH_PORT_RANGE"] == "5100-5199"
    assert out["PUBLIC_HOSTS"] == "a,b"
    assert out["SEED_DEMO"] == "1"
    assert out["WEB_CONCURRENCY"] == "4"
    assert out["APP_ENV"] == "production"


def test_query_settings_defaults_and_parsing():
    s = Settings.from_env({"APP_ENV": "dev", "DATABASE_URL": "postgresql://x/y"})
    assert s.user_query_limit == 4 and s.cache_ttl("teams") == 60.0 and s.cache_ttl("slow-query") == 0.0
    assert s.blocking_baseline is False and s.query_prefetch_seconds == 10.0
    s = Settings.from_env({"APP_ENV": "dev", "DATABASE_URL": "postgresql://x/y", "USER_QUERY_LIMIT": "9",
                           "QUERY_CACHE_TTL": " teams=5 , slow-query=2.5", "BLOCKING_BASELINE": "1",
                           "QUERY_PREFETCH_SECONDS": "0"})
    assert (s.user_query_limit, s.cache_ttl("teams"), s.cache_ttl("slow-query"), s.blocking_baseline,
            s.query_prefetch_seconds) == (9, 5.0, 2.5, True, 0.0)
    assert Settings.from_env(s.as_env()) == s


@pytest.mark.parametrize("raw", ["teams", "teams=", "teams=-1", "=5", "teams=x", "teams=99999999"])
def test_query_cache_ttl_must_be_name_equals_seconds(raw):
    with pytest.raises(ConfigError, match="QUERY_CACHE_TTL must look like"):
        Settings.from_env({"APP_ENV": "dev", "DATABASE_URL": "postgresql://x/y", "QUERY_CACHE_TTL": raw})


def test_metrics_settings_defaults_parsing_and_round_trip():
    s = Settings.from_env(prod_env())
    assert s.metrics_allowed_addresses == ("127.0.0.0/8", "::1/128") and s.prometheus_multiproc_dir == ""
    s = Settings.from_env(prod_env(METRICS_ALLOWED_ADDRESSES=" 10.1.2.3, 192.168.0.7/24 ,::1",
                                   PROMETHEUS_MULTIPROC_DIR=" /run/metrics "))
    assert s.metrics_allowed_addresses == ("10.1.2.3/32", "192.168.0.0/24", "::1/128")
    assert s.prometheus_multiproc_dir == "/run/metrics"
    assert Settings.from_env(s.as_env()) == s
    closed = Settings.from_env(prod_env(METRICS_ALLOWED_ADDRESSES="none"))
    assert closed.metrics_allowed_addresses == () and Settings.from_env(closed.as_env()) == closed


@pytest.mark.parametrize("raw", ["localhost", "10.0.0.0/33", "300.1.1.1", "10.0.0.1;rm", "*"])
def test_metrics_allowed_addresses_must_be_addresses_or_networks(raw):
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_ADDRESSES must list"):
        Settings.from_env(prod_env(METRICS_ALLOWED_ADDRESSES=raw))
