"""Who may read /metrics, and the Flask request timer, on the real Flask app (no database: the
requests here are anonymous)."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.config import Settings
from app.web.metrics.routes import address_allowed

ENV = {"APP_ENV": "test", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "SECRET_KEY": "x" * 40,
       "BOKEH_SECRET_KEY": "y" * 48}


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_allowed_exactly_when_a_network_holds_it(address):
    networks = ("10.0.0.0/8", "192.168.1.0/24")
    expected = any(address in ipaddress.ip_network(n) for n in networks)
    assert address_allowed([str(address)], networks) is expected
    # ...and as IPv6 clients see it (an IPv4-mapped address)
    assert address_allowed([f"::ffff:{address}"], networks) is expected


@given(st.ip_addresses(), st.ip_addresses())
def test_every_address_must_be_allowed(a, b):
    networks = (str(ipaddress.ip_network(a)),)
    assert address_allowed([str(a), str(a)], networks)
    plain_b = getattr(b, "ipv4_mapped", None) or b  # ::ffff:10.0.0.1 is 10.0.0.1
    assert address_allowed([str(a), str(b)], networks) is (b == a or plain_b == a)


def test_an_ipv4_mapped_address_matches_either_form():
    assert address_allowed(["::ffff:127.0.0.1"], ("127.0.0.0/8",))
    assert address_allowed(["::ffff:127.0.0.1"], ("::ffff:127.0.0.1/128",))
    assert not address_allowed(["::ffff:127.0.0.1"], ("::1/128",))


@pytest.mark.parametrize("addresses", [[], [None], [""], ["localhost"], ["127.0.0.1", "not an address"],
                                       ["127.0.0.1", None]])
def test_no_or_unreadable_addresses_are_refused(addresses):
    assert not address_allowed(addresses, ("0.0.0.0/0", "::/0"))


@pytest.fixture
def app():
    return create_app(Settings.from_env(ENV))


def get(app, path: str, peer: str = "127.0.0.1", forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return app.test_client().get(path, headers=headers, environ_base={"REMOTE_ADDR": peer})


def test_loopback_reads_metrics_by_default_and_others_are_refused(app):
    assert get(app, "/metrics").status_code == 200
    assert get(app, "/metrics", peer="::1").status_code == 200
    assert get(app, "/metrics", peer="203.0.113.9").status_code == 403


def test_the_address_nginx_appended_counts_not_the_clients_own(app):
    # nginx: X-Forwarded-For = what the client sent + $remote_addr; ProxyFix takes the last.
    assert get(app, "/metrics", forwarded="127.0.0.1, 203.0.113.9").status_code == 403
    assert get(app, "/metrics", forwarded="203.0.113.9, 127.0.0.1").status_code == 200
    # Straight to gunicorn from elsewhere, claiming to be loopback: the peer counts too.
    assert get(app, "/metrics", peer="203.0.113.9", forwarded="127.0.0.1").status_code == 403


def test_an_allowed_network_and_none(app):
    wide = create_app(Settings.from_env({**ENV, "METRICS_ALLOWED_ADDRESSES": "203.0.113.0/24,127.0.0.1"}))
    assert get(wide, "/metrics", peer="203.0.113.9").status_code == 200
    assert get(wide, "/metrics", peer="203.0.113.9", forwarded="198.51.100.1").status_code == 403
    closed = create_app(Settings.from_env({**ENV, "METRICS_ALLOWED_ADDRESSES": "none"}))
    assert get(closed, "/metrics").status_code == 403


def _count(body: str, endpoint: str, status: str) -> float:
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "happiness_http_request_duration_seconds_count" and \
                    s.labels == {"endpoint": endpoint, "status": status}:
                return s.value
    return 0.0


def test_requests_are_timed_by_endpoint_and_status(app):
    body = get(app, "/metrics").get_data(as_text=True)
    unmatched, metrics_ok = _count(body, "unmatched", "404"), _count(body, "metrics.show", "200")
    for _ in range(3):
        assert get(app, "/no/such/page").status_code == 404
    assert get(app, "/metrics", peer="203.0.113.9").status_code == 403
    response = get(app, "/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    body = response.get_data(as_text=True)
    assert _count(body, "unmatched", "404") == unmatched + 3
    assert _count(body, "metrics.show", "200") == metrics_ok + 1  # the scrape itself is timed after it answers
    assert _count(body, "metrics.show", "403") >= 1
