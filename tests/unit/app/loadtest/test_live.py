"""Unit tests for the live run's pure parts: reading chart updates, matching them to writes,
the accounting (latency, missed, duplicated, misdelivered), the session plan, the summary."""
from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest
from bokeh.util.serialization import convert_datetime_type

from app.loadtest.__main__ import live_config_from_args, live_parser, main
from app.loadtest.accounts import team_name, team_plan
from app.loadtest.live import (
    DEFAULT_MIX,
    Account,
    ChartTracker,
    LiveConfig,
    LiveRun,
    LiveSession,
    PlannedSession,
    Tally,
    Update,
    Watch,
    Watcher,
    Write,
    account,
    allocate,
    assign,
    bokeh_ms,
    day_key,
    format_live,
    parse_mix,
    plain,
    plan_sessions,
    point_key,
    summarize_live,
    tally_summary,
)
from app.loadtest.runner import LoadTestError

NOON = dt.datetime(2026, 3, 4, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
DAY = day_key(bokeh_ms(NOON))
URL = "http://127.0.0.1:8080"


def write(i: int, sent: float, *, user: int = 1, team: int = 10, name: str = "A", at: dt.datetime | None = None,
          trip: float = 0.002) -> Write:
    created = at or NOON + dt.timedelta(seconds=i)
    return Write(i, user, team, name, sent, sent + trip, bokeh_ms(created))


def update(arrival: float, *marks, size: int = 100) -> Update:
    return Update(arrival, size, ("ColumnsPatched",), tuple(marks))


def smap(**columns) -> dict:
    """A dict as Bokeh serializes it."""
    return {"type": "map", "entries": [[k, v] for k, v in columns.items()]}


# -- what Bokeh sends --------------------------------------------------------------------------

def test_timestamps_match_what_bokeh_serializes():
    assert bokeh_ms(NOON) == convert_datetime_type(NOON)
    eastern = NOON.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert bokeh_ms(eastern) == bokeh_ms(NOON)  # the same instant, whatever the zone
    assert point_key(bokeh_ms(NOON)) == point_key(1772625600123.4558)  # microseconds survive float noise
    assert point_key(bokeh_ms(NOON)) != point_key(bokeh_ms(NOON + dt.timedelta(microseconds=1)))
    midnight = dt.datetime(2026, 3, 4, tzinfo=dt.timezone.utc)
    assert DAY == bokeh_ms(midnight) == day_key(bokeh_ms(midnight))


def test_plain_reads_serialized_maps_and_refuses_buffers():
    assert plain(smap(a=[1, 2], b=smap(c=["x"]))) == {"a": [1, 2], "b": {"c": ["x"]}}
    assert plain({"type": "number", "value": "nan"}) != plain({"type": "number", "value": "nan"})  # NaN
    with pytest.raises(ValueError, match="ndarray"):
        plain({"type": "ndarray", "array": {}})


def test_tracker_of_points_marks_streamed_points_and_the_new_points_of_a_whole_data_set():
    t1, t2 = bokeh_ms(NOON), bokeh_ms(NOON + dt.timedelta(seconds=1))
    tracker = ChartTracker.from_serialized("s1", smap(time=[t1], score=[5]))
    assert tracker.kind == ChartTracker.POINTS
    assert tracker.event({"kind": "ColumnsStreamed", "model": {"id": "s1"}, "data": smap(time=[t2], score=[3])}) \
        == [("point", point_key(t2))]
    assert tracker.event({"kind": "ColumnsStreamed", "model": {"id": "other"}, "data": smap(time=[t2])}) is None
    t3 = bokeh_ms(NOON + dt.timedelta(seconds=2))
    assert tracker.event({"kind": "ColumnDataChanged", "model": {"id": "s1"},
                          "data": smap(time=[t1, t2, t3], score=[5, 3, 1])}) == [("point", point_key(t3))]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s1"}, "patches": smap(score=[[0, 9]])}) \
        == [("unknown",)]


def test_tracker_of_counts_follows_days_through_streams_and_patches():
    yesterday = DAY - 86_400_000
    tracker = ChartTracker.from_serialized("s", smap(day=[yesterday], mean=[5.0], entries=[3]))
    assert tracker.kind == ChartTracker.COUNTS and tracker.counts == {yesterday: 3}
    # Today's first entry is a new day (a stream), the next ones patch it.
    assert tracker.event({"kind": "ColumnsStreamed", "model": {"id": "s"},
                          "data": smap(day=[DAY], mean=[7.0], entries=[1])}) == [("count", DAY, 1)]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"},
                          "patches": smap(mean=[[1, 6.0]], entries=[[1, 2]])}) == [("count", DAY, 2)]
    assert tracker.counts == {yesterday: 3, DAY: 2}
    # A whole new data set (the polling baseline) marks the days whose count changed.
    assert tracker.event({"kind": "ModelChanged", "attr": "data", "model": {"id": "s"},
                          "new": smap(day=[yesterday, DAY], mean=[5.0, 6.5], entries=[3, 4])}) == [("count", DAY, 4)]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"}, "patches": smap(entries=[[7, 1]])}) \
        == [("unknown",)]  # a row the chart does not have


def test_tracker_of_series_names_the_team_of_each_patched_or_streamed_row():
    tracker = ChartTracker.from_serialized("s", smap(xs=[[1], [1]], ys=[[5], [6]], team=["A", "B"], color=["r", "g"]))
    assert tracker.kind == ChartTracker.SERIES
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"},
                          "patches": smap(xs=[[1, [1, 2]]], ys=[[1, [6, 7]]])}) == [("series", "B")]
    assert tracker.event({"kind": "ColumnsStreamed", "model": {"id": "s"},
                          "data": smap(xs=[[2]], ys=[[4]], team=["C"], color=["b"])}) == [("series", "C")]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"}, "patches": smap(ys=[[2, [5]]])}) \
        == [("series", "C")]
    # One point of one team's array: the row and a slice of it.
    part = [[0, {"type": "slice", "start": 1, "stop": 2, "step": None}], [5.5]]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"}, "patches": smap(ys=[part])}) \
        == [("series", "A")]
    assert tracker.event({"kind": "ColumnsPatched", "model": {"id": "s"}, "patches": smap(ys=[["x", [1]]])}) \
        == [("unknown",)]
    assert tracker.event({"kind": "ColumnDataChanged", "model": {"id": "s"},
                          "data": smap(xs=[], ys=[], team=[], color=[])}) == [("series", None)]


def test_live_session_turns_patches_into_updates_with_marks():
    reply = SimpleNamespace(content={"doc": {"roots": [
        {"type": "object", "name": "Column", "id": "r", "attributes": {"name": "dashboard", "tags": ["worker:w2"],
                                                                     "children": [
            {"type": "object", "name": "ColumnDataSource", "id": "src",
             "attributes": {"name": "chart-source", "data": smap(day=[], mean=[], entries=[])}},
            {"type": "object", "name": "Div", "id": "live", "attributes": {"name": "live-status", "tags": ["waiting"]}},
        ]}}]}})
    session = LiveSession(ws=None, timeout=1.0)
    session._load(reply)
    assert session.worker == "w2" and session.tracker.kind == ChartTracker.COUNTS

    def patch(*events):
        content = {"events": list(events)}
        return SimpleNamespace(msgtype="PATCH-DOC", content=content, content_json=json.dumps(content))
    status = {"kind": "ModelChanged", "model": {"id": "live"}, "attr": "tags", "new": ["live"]}
    message = patch(status)
    session._record(message)
    session._apply(message)
    assert session.live_state == "live" and session.updates == [] and len(session.patches) == 1
    stream = patch({"kind": "ColumnsStreamed", "model": {"id": "src"}, "attr": "data",
                    "data": smap(day=[DAY], mean=[4.0], entries=[1])})
    session._record(stream)
    [got] = session.updates
    assert got.marks == (("count", DAY, 1),) and got.kinds == ("ColumnsStreamed",)
    assert got.size == len(stream.content_json) and got.arrival == session.data_events[0][0]


# -- matching updates to writes -----------------------------------------------------------------

def test_assign_gives_each_update_the_writes_sent_before_it():
    # One write per batch; then two writes in one batch.
    assert assign([0.0, 1.0, 2.0, 2.01], [0.06, 1.06, 2.07]) == ([0, 1, 2, 2], 0)
    # The write at 0.055 went out after batch 1 was read but before its update arrived (0.06):
    # it is update 2's, since update 2 must carry something.
    assert assign([0.0, 0.01, 0.055], [0.06, 0.11]) == ([0, 0, 1], 0)
    # An update with nothing left to carry is extra (a repeat).
    assert assign([0.0], [0.06, 0.07]) == ([0], 1)
    assert assign([1.0], [0.5, 1.06]) == ([1], 1)  # before any write
    # Never delivered.
    assert assign([0.0, 1.0], [0.06]) == ([0, None], 0)
    assert assign([], [0.1]) == ([], 1)


def test_watch_scopes():
    w = write(1, 0.0, user=7, team=3)
    assert Watch("my-happiness", ("user", 7)).sees(w) and not Watch("my-happiness", ("user", 8)).sees(w)
    assert Watch("team", ("team", 3)).sees(w) and not Watch("team", ("team", 4)).sees(w)
    assert Watch("teams", ("all", None)).sees(w)


def test_points_account_latency_per_write_and_flag_repeats_and_strangers():
    mine = [write(1, 0.0), write(2, 1.0)]
    other = write(3, 1.5, user=2)
    writes = mine + [other]
    watch = Watch("my-happiness", ("user", 1))
    t = account(watch, writes, [update(0.05, ("point", mine[0].point)), update(1.08, ("point", mine[1].point))])
    assert (t.expected, t.delivered, t.missed, t.duplicated, t.misdelivered) == (2, 2, 0, 0, 0)
    assert t.latencies == pytest.approx([0.048, 0.078])
    # The same point again, another user's point, a point nobody wrote.
    t = account(watch, writes, [update(0.05, ("point", mine[0].point)), update(0.06, ("point", mine[0].point)),
                                update(1.6, ("point", other.point)), update(1.7, ("point", 12345))])
    assert (t.delivered, t.missed, t.duplicated, t.misdelivered, t.updates) == (1, 1, 1, 2, 4)


def test_counts_account_the_writes_a_days_count_holds():
    base = {DAY: 5}
    watch = Watch("team", ("team", 10), base)
    ws = [write(1, 0.0), write(2, 0.02), write(3, 0.055), write(4, 1.0)]
    # Writes 1 and 2 in one batch; write 3 went out while that batch's update was on its way.
    t = account(watch, ws, [update(0.07, ("count", DAY, 7)), update(0.12, ("count", DAY, 8)),
                            update(1.06, ("count", DAY, 9))])
    assert (t.expected, t.delivered, t.missed, t.duplicated, t.misdelivered) == (4, 4, 0, 0, 0)
    assert t.latencies == pytest.approx([0.068, 0.048, 0.063, 0.058])
    # A repeat of the same count is duplicated; a count past what was written is misdelivered once.
    t = account(watch, ws[:1], [update(0.07, ("count", DAY, 6)), update(0.08, ("count", DAY, 6)),
                                update(0.5, ("count", DAY, 7)), update(0.6, ("count", DAY, 7))])
    assert (t.delivered, t.duplicated, t.misdelivered) == (1, 2, 1)
    # A chart that goes back, and an update with no readable data.
    t = account(watch, ws[:2], [update(0.07, ("count", DAY, 7)), update(0.08, ("count", DAY, 6)),
                                update(0.09, ("unknown",))])
    assert (t.delivered, t.misdelivered) == (2, 2)
    # Another team's write is not expected, and nothing reached this chart: nothing missed.
    t = account(watch, [write(9, 0.0, team=11, name="B")], [])
    assert (t.expected, t.missed, t.updates) == (0, 0, 0)


def test_series_account_per_team():
    a1, b1, a2 = write(1, 0.0, team=10, name="A"), write(2, 0.01, team=11, name="B"), write(3, 1.0, team=10, name="A")
    watch = Watch("teams", ("all", None))
    # One batch with two teams: one update per team, in any order.
    t = account(watch, [a1, b1, a2], [update(0.07, ("series", "B")), update(0.08, ("series", "A")),
                                      update(1.06, ("series", "A"))])
    assert (t.expected, t.delivered, t.missed, t.duplicated, t.misdelivered) == (3, 3, 0, 0, 0)
    assert sorted(t.latencies) == pytest.approx(sorted([0.078, 0.058, 0.058]))
    # A team nobody wrote to moved; an extra update of A; B never arrived.
    t = account(watch, [a1, b1], [update(0.07, ("series", "A")), update(0.09, ("series", "A")),
                                  update(0.1, ("series", "Z"))])
    assert (t.delivered, t.missed, t.duplicated, t.misdelivered) == (1, 1, 1, 1)
    # A whole new data set covers every team's writes sent before it.
    t = account(watch, [a1, b1, a2], [update(0.5, ("series", None))])
    assert (t.delivered, t.missed, t.duplicated) == (2, 1, 0)


def test_tally_summary_percentiles_and_sizes():
    t = Tally(expected=4, delivered=4, updates=2, latencies=[0.05, 0.06, 0.07, 0.2], sizes=[100, 300])
    s = tally_summary(t)
    assert s["latency_s"]["p50"] == 0.06 and s["latency_s"]["p99"] == 0.2 and s["latency_s"]["max"] == 0.2
    assert s["bytes_per_update"] == 200 and s["writes_per_update"] == 2
    assert tally_summary(Tally())["latency_s"]["p50"] is None


# -- planning ------------------------------------------------------------------------------------

def accounts_of(count: int, teams: int) -> list[Account]:
    return [Account(i + 1, f"lt-{i + 1:03d}", role, 100 + t, team_name(t, teams))
            for i, (t, role) in enumerate(team_plan(count, teams))]


def test_team_plan_spreads_accounts_and_leads_over_teams():
    assert team_plan(5, 2) == [(1, "lead"), (2, "lead"), (1, "member"), (2, "member"), (1, "member")]
    assert [team_name(1, 10), team_name(10, 10), team_name(7, 120)] == ["Load test 01", "Load test 10", "Load test 007"]


def test_mix_and_allocation():
    assert parse_mix("team=70, my-happiness=20,teams=10") == DEFAULT_MIX
    assert parse_mix("team=1,team=1") == (("team", 2.0),)
    for bad in ("team", "slow-query=1", "team=x", "team=-1", "team=0", "team=inf"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    assert allocate(400, DEFAULT_MIX) == {"team": 280, "my-happiness": 80, "teams": 40}
    assert allocate(12, DEFAULT_MIX) == {"team": 9, "my-happiness": 2, "teams": 1}  # 8.4, 2.4: a tie
    assert sum(allocate(7, (("team", 1.0), ("teams", 1.0), ("my-happiness", 1.0))).values()) == 7


def test_sessions_are_interleaved_and_spread_over_teams_and_leads():
    plan = plan_sessions(accounts_of(40, 10), 400, DEFAULT_MIX)
    assert [p.index for p in plan] == list(range(400))
    by = {name: [p for p in plan if p.dashboard == name] for name in ("team", "my-happiness", "teams")}
    assert {k: len(v) for k, v in by.items()} == {"team": 280, "my-happiness": 80, "teams": 40}
    assert {p.account.role for p in by["teams"]} == {"lead"} and len({p.account.team for p in by["teams"]}) == 10
    assert len({p.account.team for p in by["team"]}) == 10 and len({p.account.username for p in by["team"]}) == 40
    assert len({p.dashboard for p in plan[:10]}) == 3  # mixed from the start, not in blocks
    assert [p.watch_scope for p in (by["team"][0], by["my-happiness"][0], by["teams"][0])] == [
        ("team", by["team"][0].account.team_id), ("user", by["my-happiness"][0].account.user_id), ("all", None)]
    baseline = plan_sessions(accounts_of(40, 10), 400, DEFAULT_MIX, baseline=True)
    assert {p.dashboard for p in baseline} == {"team-polling", "my-happiness", "teams"}
    assert baseline[0].watch_scope[0] in ("team", "user", "all")
    with pytest.raises(LoadTestError, match="lead or admin"):
        plan_sessions([a for a in accounts_of(40, 10) if a.role == "member"], 10, DEFAULT_MIX)


# -- the summary and the command line -------------------------------------------------------------

def test_summary_counts_sessions_deliveries_and_bytes():
    accounts = accounts_of(4, 2)
    w1 = write(1, 10.0, user=1, team=101, name="Load test 01")
    ok = Watcher(PlannedSession(0, "team", accounts[0]), worker="w1",
                 session=SimpleNamespace(patches=[(9.0, 500), (10.05, 160), (10.06, 60)]))
    failed = Watcher(PlannedSession(1, "teams", accounts[1]), error="http-403", message="no")
    tally = account(Watch("team", ("team", 101), {}), [w1], [update(10.05, ("count", day_key(w1.created_ms), 1),
                                                                        size=160)])
    run = LiveRun(LiveConfig(url=URL, database_url="postgresql://x"), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                  accounts, [ok, failed], [w1], [tally, None], open_s=3.0, write_s=2.0, tester_cpu_s=0.1)
    s = summarize_live(run)
    assert "database_url" not in s["config"] and "password" not in s["config"]
    assert s["sessions"]["open"] == 1 and s["sessions"]["failed"] == 1 and s["sessions"]["by_worker"] == {"w1": 1}
    d = s["deliveries"]
    assert (d["expected"], d["delivered"], d["missed"], d["bytes_per_update"]) == (1, 1, 0, 160)
    assert d["latency_s"]["p50"] == pytest.approx(0.048)
    assert s["patch_bytes_per_session_s"] == 110  # 220 bytes after the first write, over 2 s
    assert s["clean"] is False  # a session did not open
    text = format_live(s)
    assert "p50 48 ms" in text and "missed 0, duplicated 0, misdelivered 0" in text and "http-403 x1" in text


def test_live_arguments(capsys):
    args = live_parser().parse_args(["--url", URL + "/", "--database-url", "postgresql://x", "--baseline",
                                     "--dashboard-mix", "team=3,teams=1", "--sessions", "12", "--rate", "2",
                                     "--seconds", "3", "--seed", "7"])
    config = live_config_from_args(args)
    assert config == LiveConfig(url=URL, database_url="postgresql://x", sessions=12, rate=2.0, seconds=3.0,
                                mix=(("team", 3.0), ("teams", 1.0)), baseline=True, seed=7)
    assert config.writes == 6 and config.grace_s == 7.0
    assert LiveConfig(url=URL, database_url="x").grace_s == 2.0
    for argv, message in ((["--dashboard-mix", "nope=1"], "NAME=WEIGHT"), (["--rate", "0"], "must be > 0"),
                          (["--sessions", "0"], "must be >= 1")):
        with pytest.raises(SystemExit) as exc:
            main(["live", "--url", URL, "--database-url", "postgresql://x", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["live", "--url", URL, "--database-url", ""])
    assert exc.value.code == 2 and "DATABASE_URL" in capsys.readouterr().err


def test_accounts_arguments_for_teams(capsys):
    for argv, message in ((["--teams", "2", "--role", "member"], "cannot be combined"),
                          (["--teams", "5"], "must not exceed --count"),
                          (["--history-days", "30"], "needs --teams")):
        with pytest.raises(SystemExit) as exc:
            main(["accounts", "--count", "3", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err
