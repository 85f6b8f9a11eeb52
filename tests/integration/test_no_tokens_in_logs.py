"""No token in any log: a site with every log on (gunicorn and Tornado at INFO, nginx's access
and error logs) serves pages, sessions, refusals and a dying worker; then every log is
searched for every token the run minted."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from app.loadtest.site_client import TOKEN_HEADER, ClientError, SiteClient
from tests.integration.helpers import mint, site_with_logs, wait_until


@pytest.fixture
def chatty_site(pg, output_dir):
    log_dir = output_dir / "logs-site-logs"
    for site in site_with_logs(pg, log_dir, WEB_CONCURRENCY="2", LOG_LEVEL="debug", EDGE_ACCESS_LOG="/dev/stdout"):
        yield site, log_dir


def test_no_log_line_contains_a_token(chatty_site):
    site, log_dir = chatty_site
    minted: list[str] = []

    async def scenario() -> None:
        client = SiteClient(site.url)
        await client.login("alice", "demo")
        for dashboard in ("team", "my-happiness", "team"):
            page = await client.open_dashboard(dashboard)
            minted.append(page.token)
            assert (await client.fetch_autoload(page)).code == 200
            session = await client.connect(page)
            await session.wait_for_chart(timeout=30)
            session.close()
        # Refusals: a token for another dashboard, a forged one, and a page whose worker dies.
        page = await client.open_dashboard("my-happiness")
        minted.append(page.token)
        wrong = await client.request("GET", page.autoload_url.replace("/my-happiness/", "/team/"),
                                     headers={TOKEN_HEADER: page.token})
        assert wrong.code == 403
        forged = page.token[:-4] + ("AAAA" if not page.token.endswith("AAAA") else "BBBB")
        assert (await client.request("GET", page.autoload_url, headers={TOKEN_HEADER: forged})).code == 403
        page = await client.open_dashboard("team")
        minted.append(page.token)
        session = await client.connect(page)
        await session.wait_for_chart(timeout=30)
        victim = next(pid for wid, _port, pid in site.registered_workers() if f"w{wid}" == page.worker)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(ClientError):  # the websocket closes with its worker
            await session.settle(5.0)
        # Bokeh's own way, the token in the URL, is refused by the edge before anything logs it
        # (nginx's error log would write the whole request line of this dead worker's request).
        in_url = await client.request("GET", page.autoload_url + "&bokeh-token=" + page.token)
        assert in_url.code == 400 and b"X-Bokeh-Token" in in_url.body
        minted.append(mint(site, "alice", "team", page.worker, {"days": 365}))
    asyncio.run(scenario())
    wait_until(lambda: len(site.registered_workers()) == 2, 30, "the killed worker was not replaced")
    logs = {path.name: path.read_text(errors="replace") for path in Path(log_dir).glob("*.log")}
    assert set(logs) == {"edge.log", "gunicorn.log"} and all(logs.values())
    assert "GET /dashboards/team" in logs["edge.log"]  # the access log is on
    assert "/autoload.js" in logs["gunicorn.log"]       # so is Tornado's
    for token in minted:
        for part in {token, *token.split(".")} - {""}:
            for name, text in logs.items():
                assert part not in text, f"{name} contains (part of) a session token"
