"""Log lines name their request and session, on a real site (LOG_FORMAT=json, LOG_LEVEL=info):
a page's lines in gunicorn and nginx carry the id the response echoed, a dashboard session's
query line its worker and session, and the INFO lines of the app and the edge are all there."""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from bokeh.util.token import get_session_id

from app.loadtest.site_client import SiteClient, parse_page
from tests.integration.helpers import assert_clean_log, site_with_logs, wait_until


@pytest.fixture
def json_site(pg, output_dir):
    log_dir = output_dir / "json-logs-site-logs"
    for site in site_with_logs(pg, log_dir, WEB_CONCURRENCY="2", LOG_LEVEL="info", LOG_FORMAT="json",
                               EDGE_ACCESS_LOG="/dev/stdout"):
        yield site, log_dir


def entries(path: Path) -> list[dict]:
    """The JSON lines of a log (nginx's error log, were there one, is its own format)."""
    return [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]


def test_lines_name_their_request_and_session(json_site):
    site, log_dir = json_site
    seen: dict = {}

    async def scenario() -> None:
        client = SiteClient(site.url)
        await client.login("alice", "demo")
        response = await client.request("GET", "/dashboards/team")
        assert response.code == 200
        seen["request"] = response.headers["X-Request-Id"]
        page = parse_page(response.code, response.body.decode())
        seen["page"] = page
        assert (await client.fetch_autoload(page)).code == 200
        session = await client.connect(page)
        await session.wait_for_chart(timeout=60)
        session.close()
    asyncio.run(scenario())
    rid, page = seen["request"], seen["page"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid  # nginx's $request_id, passed on and echoed
    session = get_session_id(page.token).split(".")[0]
    gunicorn_log, edge_log = log_dir / "gunicorn.log", log_dir / "edge.log"

    def page_line() -> dict | None:
        return next((e for e in entries(gunicorn_log) if e["logger"] == "gunicorn.access"
                     and e.get("request_id") == rid), None)
    line = wait_until(page_line, 10, f"no gunicorn access line with request_id {rid}")
    assert "/dashboards/team" in line["message"] and line["level"] == "INFO"
    assert line["worker"].startswith("w") and line["pid"] > 0 and line["host"]
    # nginx's access line is JSON too (LOG_FORMAT=json), with the same key.
    nginx = wait_until(lambda: [e for e in entries(edge_log) if e["logger"] == "nginx.access"
                                and e.get("request_id") == rid], 10, "nginx's access line lacks the request id")
    assert " GET /dashboards/team 200 " in nginx[0]["message"] and nginx[0]["level"] == "INFO"

    def query_line() -> dict | None:
        return next((e for e in entries(gunicorn_log) if e["logger"] == "bokeh_apps.kit.document_query"
                     and e.get("session_id") == session), None)
    query = wait_until(query_line, 10, f"no query line for session {session}")
    assert query["worker"] == page.worker and query["level"] == "INFO" and "rows in" in query["message"]
    # Tornado's access lines of the session (autoload.js, the websocket) name it too, with the
    # request id nginx logged for them.
    def tornado_lines() -> list[dict] | None:
        lines = [e for e in entries(gunicorn_log) if e["logger"] == "tornado.access" and e.get("session_id") == session]
        seen = {e["message"].rsplit("/", 1)[-1].split(" ")[0] for e in lines}
        return lines if {"autoload.js", "ws"} <= seen else None
    # The websocket's line is written when it closes, a moment after the client closed it.
    tornado = wait_until(tornado_lines, 10, f"Tornado's access lines of session {session} lack autoload.js or ws")
    # nginx writes the websocket's access line when it sees the close, which may come after
    # Tornado wrote its own: wait for every one of the session's ids to be in nginx's log.
    def logged_ids() -> set | None:
        ids = {e.get("request_id") for e in entries(edge_log) if e["logger"] == "nginx.access"}
        return ids if {e["request_id"] for e in tornado} <= ids else None
    nginx_ids = wait_until(logged_ids, 10, f"nginx's log lacks the request ids of session {session}'s Tornado lines")
    for e in tornado:
        assert e["worker"] == page.worker and e["request_id"] in nginx_ids
    # The token itself is never logged, nor the session id's signature.
    logs_text = gunicorn_log.read_text() + edge_log.read_text()
    for part in page.token.split(".") + [get_session_id(page.token).split(".")[1]]:
        assert part not in logs_text

    # INFO is not dropped anywhere: the app's, Bokeh's and the edge's own lines are there.
    messages = {(e["logger"], e["level"], e["message"]) for e in entries(gunicorn_log) + entries(edge_log)}
    for logger, start in (("app.serving.bokeh_server", "Bokeh server w"), ("app.edge.nginx", "edge: routes now"),
                          ("gunicorn.error", "Booting worker")):
        assert any(lg == logger and lv == "INFO" and m.startswith(start) for lg, lv, m in messages), logger
    # Lines outside any request or session name neither.
    started = next(e for e in entries(gunicorn_log) if e["message"].startswith("Bokeh server w"))
    assert "request_id" not in started and "session_id" not in started
    assert started["worker"] == started["message"].split()[2]  # its start-up lines name the worker too
    for path in (gunicorn_log, edge_log):
        assert_clean_log(path)
