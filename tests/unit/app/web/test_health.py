"""/healthz says whether this process can reach the database (used by compose and the launcher)."""
from __future__ import annotations

from app import create_app
from app.config import Settings
from app.ops.launcher import free_port


def test_healthz_is_503_with_a_reason_when_the_database_is_unreachable():
    # A port nothing listens on: the connection is refused at once.
    settings = Settings.from_env({"APP_ENV": "test", "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x"})
    client = create_app(settings).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "reason": "the database cannot be reached"}


def test_healthz_is_200_when_the_database_answers(database_url):
    settings = Settings.from_env({"APP_ENV": "test", "DATABASE_URL": database_url})
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
