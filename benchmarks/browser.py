"""Login to chart in a real browser: headless Chromium (Playwright) against a running site.

For each of N runs, cold (a fresh browser context: empty HTTP cache, no cookies) and warm (one
context kept across runs: its HTTP cache stays, its cookies are cleared before each login):

  login-to-chart  from submitting the login form (with ?next= the dashboard) to the chart's data
                  in BokehJS (the query-status tag "done" and the chart source filled)
  page-to-chart   from navigating to the dashboard URL (logged in) to the same point

Both are read from the page's own clock (performance.now(), whose origin is the navigation's
start: for the login, the form's POST, whose redirect is part of the same navigation), checked
on every animation frame. Where the time goes comes from the Performance API (navigation and
resource timing: HTML, BokehJS and Panel bundles, autoload.js) and from a wrapped WebSocket
(created, open, each frame's arrival). The dashboard is slow-query with a 0.1 s query and a
distinct variant per run (no coalescing, no cache); the query time is subtracted for the target.

Alone: `python -m benchmarks.browser [--url URL] [--runs N]` (without --url it starts its own site
as `make bench` does). In `make bench`: the `browser` scenario.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from app.loadtest.accounts import DEV_LOADTEST_PASSWORD, ensure_accounts, username

CHROMIUM = "/usr/bin/chromium"
# The flags the browser tests use here (tests/browser/conftest.py): no sandbox in containers,
# no background traffic to skew the timings.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DASHBOARD = "slow-query"
QUERY_S = 0.1  # short, so the page's own costs dominate; subtracted for the target
TARGET_S = 1.0  # issue 12: login to chart at most 1.0 s plus the query time
RUNS = 10
TIMEOUT_MS = 30_000
HEADING = "## Login to chart in a real browser"
PREFIX, USERS = "browser", 10  # its own accounts: a login per run, round-robin
OUT = Path(__file__).resolve().parent.parent / "build" / "bench"  # as make bench writes its reports

# Installed before any page script: timestamps (page clock, ms) of every websocket's creation,
# open and frames, so the websocket part of the time can be told from the rest.
WS_PROBE_JS = """
(() => {
  const Native = window.WebSocket;
  window.__ws = [];
  // Main-thread tasks over 50 ms (script compile and run, layout): the page's own CPU time.
  window.__long = [];
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__long.push([e.startTime, e.duration]);
    }).observe({type: 'longtask', buffered: true});
  } catch (e) { /* no longtask support: the breakdown goes without it */ }
  window.WebSocket = function (url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    const rec = {created: performance.now(), open: null, frames: []};
    window.__ws.push(rec);
    ws.addEventListener('open', () => { rec.open = performance.now(); });
    ws.addEventListener('message', () => { rec.frames.push(performance.now()); });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""

# On the first frame where the chart holds its data: the page clock's reading, kept on window.
READY_JS = """
() => {
  if (window.__ready != null) return true;
  if (!(window.Bokeh && Bokeh.documents && Bokeh.documents.length)) return false;
  const doc = Bokeh.documents[0];
  const source = doc.get_model_by_name('chart-source');
  const status = doc.get_model_by_name('query-status');
  if (!source || !status || !status.tags.length || status.tags[0] !== 'done') return false;
  const y = source.get_column('y');
  if (y == null || y.length === 0) return false;
  window.__ready = performance.now();
  return true;
}
"""

# What the page spent, on its own clock (ms since the navigation started).
TIMING_JS = """
() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource').map(r => ({
    name: r.name, type: r.initiatorType, start: r.startTime, end: r.responseEnd,
    transfer: r.transferSize, encoded: r.encodedBodySize, decoded: r.decodedBodySize}));
  return {ready: window.__ready, ws: window.__ws || [], resources: res, long: window.__long || [],
          nav: {redirect_end: nav.redirectEnd, response_start: nav.responseStart, response_end: nav.responseEnd,
                dom_content_loaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
                transfer: nav.transferSize}};
}
"""


# -- pure parts ----------------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Iterable[float]) -> dict[str, float | None]:
    """Median, p90, min and max in seconds, rounded to the millisecond."""
    xs = list(values)
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {"n": len(xs), "p50": r(percentile(xs, 50)), "p90": r(percentile(xs, 90)),
            "min": r(min(xs)) if xs else None, "max": r(max(xs)) if xs else None}


def kind_of(url: str, initiator: str) -> str:
    """Which part of the page a resource is: the BokehJS or Panel bundles, autoload.js, or other."""
    path = url.split("?", 1)[0]
    if "/autoload.js" in path:
        return "autoload"
    if "/static/extensions/panel/" in path and path.endswith(".js"):
        return "panel_js"
    if "/static/js/" in path and path.endswith(".js"):
        return "bokeh_js"
    if path.endswith(".css") or "/static/extensions/panel/" in path or "/static/" in path:
        return "static_other"
    return "other"


def phases(timing: dict) -> dict[str, Any]:
    """One run's breakdown in seconds since the navigation started (page clock), from TIMING_JS's
    result: when the HTML arrived, when the bundles and autoload.js were in, the websocket's
    open, its first frame (ACK) and the document (the pull's reply: frames 4-6), and the chart."""
    ms = lambda v: None if v is None else round(v / 1000.0, 4)  # noqa: E731
    nav, out = timing["nav"], {}
    out["redirect_end"] = ms(nav.get("redirect_end") or None)  # the login POST's 302, when there was one
    out["html_end"] = ms(nav["response_end"])
    out["dom_content_loaded"] = ms(nav["dom_content_loaded"])
    by_kind: dict[str, list[dict]] = {}
    for r in timing["resources"]:
        by_kind.setdefault(kind_of(r["name"], r["type"]), []).append(r)
    for kind in ("bokeh_js", "panel_js", "autoload", "static_other"):
        rs = by_kind.get(kind, [])
        out[f"{kind}_start"] = ms(min(r["start"] for r in rs)) if rs else None
        out[f"{kind}_end"] = ms(max(r["end"] for r in rs)) if rs else None
        out[f"{kind}_count"] = len(rs)
        out[f"{kind}_transfer_bytes"] = sum(r["transfer"] or 0 for r in rs)
        out[f"{kind}_decoded_bytes"] = sum(r["decoded"] or 0 for r in rs)
    ws = timing["ws"][-1] if timing["ws"] else None
    out["ws_created"] = ms(ws["created"]) if ws else None
    out["ws_open"] = ms(ws["open"]) if ws else None
    frames = ws["frames"] if ws else []
    out["ws_first_frame"] = ms(frames[0]) if frames else None
    out["ws_doc_frame"] = ms(frames[5]) if len(frames) > 5 else None  # ACK = 3 frames, then the pull's reply
    out["ws_frames"] = len(frames)
    out["ready"] = ms(timing["ready"])
    bundles_end = max((v for v in (out["bokeh_js_end"], out["panel_js_end"]) if v is not None), default=None)
    long_tasks = timing.get("long", [])
    out["long_tasks_s"] = ms(sum(d for _, d in long_tasks))
    # Main-thread work between the bundles' arrival and the websocket: BokehJS and Panel compiled and run.
    out["long_tasks_before_ws_s"] = ms(sum(d for t, d in long_tasks if bundles_end is not None and out["ws_created"]
                                           is not None and bundles_end * 1000 <= t < out["ws_created"] * 1000))
    return out


def intervals(p: dict) -> dict[str, float | None]:
    """Consecutive spans of one run (seconds) that add up to its total: what dominates."""
    # In the order they happen: the page's dashboard.js fetches autoload.js, which loads the bundles,
    # whose code, once run, opens the websocket.
    marks = [("login_post", p.get("redirect_end")), ("html", p["html_end"]), ("autoload", p["autoload_end"]),
             ("bundles", max((v for v in (p["bokeh_js_end"], p["panel_js_end"]) if v is not None), default=None)),
             ("bundles_run", p["ws_created"]), ("ws_open", p["ws_open"]), ("doc_pull", p["ws_doc_frame"]),
             ("query_and_push", p["ready"])]
    out, last = {}, 0.0
    for name, at in marks:
        if at is None:
            out[name] = None
            continue
        out[name] = round(max(0.0, at - last), 4)
        last = max(last, at)
    return out


def summarize(runs: list[dict], query_s: float) -> dict:
    """Runs (each {"total": s, "phases": {...}}) -> stats of the total, of the total minus the
    query, and the median of each interval."""
    totals = [r["total"] for r in runs]
    spans: dict[str, list[float]] = {}
    for r in runs:
        for k, v in intervals(r["phases"]).items():
            if v is not None:
                spans.setdefault(k, []).append(v)
    transfer = {k: percentile([r["phases"][f"{k}_transfer_bytes"] for r in runs], 50)
                for k in ("bokeh_js", "panel_js", "autoload", "static_other")} if runs else {}
    return {"total": stats(totals), "minus_query": stats(t - query_s for t in totals),
            "intervals_p50": {k: round(percentile(v, 50), 4) for k, v in spans.items()},
            "transfer_bytes_p50": transfer,
            "long_tasks_p50": {k: percentile([r["phases"].get(k) or 0.0 for r in runs], 50)
                               for k in ("long_tasks_s", "long_tasks_before_ws_s")} if runs else {}}


def verdict(result: dict) -> str:
    """met when the cold login-to-chart median, minus the query, is within the target."""
    m = result.get("cold", {}).get("login_to_chart", {}).get("minus_query", {}).get("p50")
    return "missed" if m is None or m > TARGET_S else "met"


# -- the browser --------------------------------------------------------------------------------

def _dashboard_path(variant: int) -> str:
    return f"/dashboards/{DASHBOARD}?" + urlencode({"seconds": f"{QUERY_S:g}", "variant": variant})


def _measure(page, url: str | None, submit=None) -> dict:
    """Navigate (url) or submit the login form (submit()), wait for the chart, read the timings."""
    if submit is not None:
        submit()
    else:
        page.goto(url, wait_until="commit")
    page.wait_for_function(READY_JS, timeout=TIMEOUT_MS, polling="raf")
    timing = page.evaluate(TIMING_JS)
    p = phases(timing)
    resources = [[r["name"].split("?", 1)[0].rsplit("/bokeh/", 1)[-1], r["transfer"], r["decoded"],
                  round(r["start"]), round(r["end"])] for r in timing["resources"]]
    return {"total": p["ready"], "phases": p, "resources": resources, "long_tasks": timing.get("long", [])}


def _login_to_chart(page, base: str, user: str, password: str, variant: int) -> dict:
    page.goto(f"{base}/login?next=" + quote(_dashboard_path(variant), safe=""))
    form = page.locator("main form")
    form.locator("input[name=username]").fill(user)
    form.locator("input[name=password]").fill(password)
    return _measure(page, None, submit=lambda: form.locator("button[type=submit]").click())


def static_headers(url: str) -> dict[str, dict[str, str | None]]:
    """How the edge serves a dashboard's BokehJS and Panel bundles (status, encoding, caching),
    asked with the Accept-Encoding a browser sends."""
    out = {}
    for name, path in (("bokeh.min.js", "/bokeh/any/static/js/bokeh.min.js"),
                       ("panel.min.js", "/bokeh/any/static/extensions/panel/panel.min.js")):
        req = urllib.request.Request(url.rstrip("/") + path, headers={"Accept-Encoding": "gzip, deflate, br"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                out[name] = {"status": str(r.status), "content_encoding": r.headers.get("Content-Encoding"),
                             "cache_control": r.headers.get("Cache-Control"), "expires": r.headers.get("Expires"),
                             "etag": r.headers.get("ETag"), "bytes_sent": str(len(body))}
        except OSError as exc:
            out[name] = {"status": f"error: {exc}"}
    return out


def run_browser(url: str, users: list[str], password: str, runs: int = RUNS) -> dict:
    """Cold and warm login-to-chart and page-to-chart against the site at `url`."""
    try:
        from playwright.sync_api import sync_playwright  # the test extra; imported only to run
    except ImportError as exc:
        raise SystemExit(f"Playwright is missing ({exc}): scripts/bootstrap.sh test installs it "
                         "(make bench does)") from None

    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: the browser scenario needs Debian's chromium")
    base = url.rstrip("/")
    # A distinct variant per page: no run shares (or finds cached) another's query.
    variants = itertools.count(random.randrange(1, 900_000))
    raw: dict[str, dict[str, list[dict]]] = {"cold": {"login_to_chart": [], "page_to_chart": []},
                                             "warm": {"login_to_chart": [], "page_to_chart": []}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            def context():
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                ctx.set_default_timeout(TIMEOUT_MS)
                ctx.add_init_script(WS_PROBE_JS)
                return ctx
            # Cold: each run a new context (empty cache), a login, then the dashboard opened again.
            for i in range(runs):
                ctx = context()
                try:
                    page = ctx.new_page()
                    user = users[i % len(users)]
                    raw["cold"]["login_to_chart"].append(_login_to_chart(page, base, user, password, next(variants)))
                    page.close()
                    cookies = ctx.cookies()  # the login filled this context's cache: page-to-chart gets a new one
                finally:
                    ctx.close()
                ctx = context()
                try:
                    ctx.add_cookies(cookies)
                    page = ctx.new_page()
                    raw["cold"]["page_to_chart"].append(_measure(page, base + _dashboard_path(next(variants))))
                finally:
                    ctx.close()
            # Warm: one context; a first visit fills its cache, then each run logs in again
            # (cookies cleared, cache kept) and reopens the dashboard in a new tab.
            ctx = context()
            try:
                page = ctx.new_page()
                _login_to_chart(page, base, users[0], password, next(variants))
                page.close()
                for i in range(runs):
                    ctx.clear_cookies()
                    page = ctx.new_page()
                    user = users[i % len(users)]
                    raw["warm"]["login_to_chart"].append(_login_to_chart(page, base, user, password, next(variants)))
                    page.close()
                    page = ctx.new_page()
                    raw["warm"]["page_to_chart"].append(_measure(page, base + _dashboard_path(next(variants))))
                    page.close()
            finally:
                ctx.close()
        finally:
            browser.close()
    result: dict[str, Any] = {"dashboard": DASHBOARD, "query_s": QUERY_S, "runs": runs, "target_s": TARGET_S,
                              "static": static_headers(base)}
    for cache, kinds in raw.items():
        result[cache] = {kind: summarize(rs, QUERY_S) for kind, rs in kinds.items()}
    result["verdict"] = verdict(result)
    result["raw"] = raw
    return result


# -- the report ---------------------------------------------------------------------------------

def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def markdown(result: dict, info: dict) -> str:
    """The section of docs/benchmarks.md."""
    lines = [HEADING, "",
             f"Produced on {info.get('date', '?')} (`{info.get('command', 'python -m benchmarks.browser')}`), "
             "headless Chromium (Debian's /usr/bin/chromium, Playwright) on the same machine as the site "
             "(its load average is in the run's header). "
             f"Dashboard `{result['dashboard']}` with a {result['query_s']:g} s query, a distinct variant each run; "
             f"{result['runs']} runs each. Cold: a fresh browser context (empty cache) per run; warm: one context "
             "whose cache is filled, cookies cleared before each login. Times are the page's own clock from the "
             "navigation's start (for the login: the form's POST) to the chart's data in BokehJS.", "",
             f"Target: login to chart ≤ {result['target_s']:g} s plus the query (cold median): "
             f"**{result['verdict']}**.", "",
             "| | cache | p50 | p90 | min | max | p50 minus query | p90 minus query |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in ("login_to_chart", "page_to_chart"):
        for cache in ("cold", "warm"):
            s = result[cache][kind]
            t, m = s["total"], s["minus_query"]
            lines.append(f"| {kind.replace('_', '-')} | {cache} | {_s(t['p50'])} | {_s(t['p90'])} | {_s(t['min'])} | "
                         f"{_s(t['max'])} | {_s(m['p50'])} | {_s(m['p90'])} |")
    names = {"login_post": "login POST + 302", "html": "dashboard HTML", "autoload": "autoload.js",
             "bundles": "BokehJS/Panel bundles", "bundles_run": "bundles run until the websocket",
             "ws_open": "websocket open", "doc_pull": "ACK + document pull",
             "query_and_push": "query + result push + render"}
    lines += ["", "Where the time goes (medians of consecutive spans, seconds; bytes transferred per run):", "",
              "| | cache | " + " | ".join(names.values()) + " | bundle bytes (bokeh + panel) |",
              "|---|---|" + "---|" * (len(names) + 1)]
    for kind in ("login_to_chart", "page_to_chart"):
        for cache in ("cold", "warm"):
            s = result[cache][kind]
            iv, tb = s["intervals_p50"], s["transfer_bytes_p50"]
            cells = " | ".join("-" if iv.get(k) is None else f"{iv[k]:.3f}" for k in names)
            lines.append(f"| {kind.replace('_', '-')} | {cache} | {cells} | "
                         f"{(tb.get('bokeh_js') or 0) / 1e3:,.0f} + {(tb.get('panel_js') or 0) / 1e3:,.0f} kB |")
    lines += ["", "Main-thread long tasks (over 50 ms: script compile and run, layout), medians: " + "; ".join(
        f"{kind.replace('_', '-')} {cache} {(result[cache][kind]['long_tasks_p50'].get('long_tasks_s') or 0):.3f} s "
        f"({(result[cache][kind]['long_tasks_p50'].get('long_tasks_before_ws_s') or 0):.3f} s between the bundles' "
        "arrival and the websocket)" for kind in ("login_to_chart", "page_to_chart") for cache in ("cold", "warm"))
        + "."]
    lines += ["", "How the edge serves the bundles (asked with `Accept-Encoding: gzip, deflate, br`): " + "; ".join(
        f"`{name}`: HTTP {h.get('status')}, Content-Encoding {h.get('content_encoding') or 'none'}, "
        f"Cache-Control `{h.get('cache_control') or '-'}`, {int(h['bytes_sent']) / 1e3:,.0f} kB sent"
        if h.get("bytes_sent") else f"`{name}`: {h.get('status')}" for name, h in result["static"].items()) + ".",
        "", "Report: build/bench/browser.json (not committed).", ""]
    return "\n".join(lines)


def scenario(url: str, database_url: str, password: str, *, runs: int = RUNS,
             command: str = "make bench ARGS='--scenarios browser'") -> tuple[dict, str]:
    """The scenario against a running site: its accounts made, the runs, build/bench/browser.json; the
    result and its section of docs/benchmarks.md."""
    ensure_accounts(database_url, USERS, prefix=PREFIX, password=password)
    result = run_browser(url, [username(PREFIX, i) for i in range(1, USERS + 1)], password, runs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "browser.json").write_text(json.dumps(result, indent=2) + "\n")
    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command}
    return result, markdown(result, info)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench import Bench  # the site as make bench makes it; imported here: bench imports us

    parser = argparse.ArgumentParser(prog="python -m benchmarks.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running site (set DATABASE_URL too: the scenario makes its accounts)")
    parser.add_argument("--password", default=os.environ.get("LOADTEST_PASSWORD", DEV_LOADTEST_PASSWORD))
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.start()
        if not bench.database_url:
            raise SystemExit("with --url, set DATABASE_URL: the scenario makes its accounts in the site's database")
        _, text = scenario(bench.url, bench.database_url, args.password, runs=args.runs,
                           command="python -m benchmarks.browser" + (f" {' '.join(argv)}" if argv else ""))
    finally:
        bench.stop()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
