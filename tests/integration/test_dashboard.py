"""Dashboard queries on a known dataset, rates computed by hand (SQLite and PostgreSQL).

The dataset (workspace A unless said otherwise; seeds s0-s3 gmail, s4-s5 outlook,
s6-s7 yahoo):

    previous week, 2026-11-03 10:00, Autumn run 0 (completed):
        gmail s0 inbox, s1 spam; outlook s4 inbox, s5 inbox
    this week, 2026-11-09 10:15, Autumn run 1 (completed):
        gmail s0 inbox, s1 inbox, s2 spam, s3 promotions;
        outlook s4 spam, s5 missing; yahoo s6 inbox, s7 error (login expired)
    this week, 2026-11-11 09:30, Winter run 2 (active):
        gmail s0 inbox; outlook s4 pending; yahoo s6 pending
    2026-11-15 00:00 (the first instant after this week), pre-flight run 3:
        gmail s0 spam
    workspace B, 2026-11-09: one gmail inbox result (never counted for A)

This week = [2026-11-08, 2026-11-15), so the previous week = [2026-11-01, 2026-11-08).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailer_app.models import (
    Campaign,
    PlacementCheck,
    PlacementResult,
    PlacementRollupDirty,
    PlacementRun,
    SeedAccount,
    Workspace,
)
from mailer_app.services import NotFoundError, placement_rollup
from mailer_app.services import dashboard as dash

WEEK = dash.Period(datetime(2026, 11, 8, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC))
RUN0_AT = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
RUN1_AT = datetime(2026, 11, 9, 10, 15, tzinfo=UTC)
RUN2_AT = datetime(2026, 11, 11, 9, 30, tzinfo=UTC)
RUN3_AT = datetime(2026, 11, 15, tzinfo=UTC)

# Run 1's check log (+1/+3/+5/+10 minutes): seed -> outcome per attempt.
RUN1_CHECKS = {
    0: ["inbox"],
    1: ["not_found", "inbox"],
    2: ["spam"],
    3: ["not_found", "not_found", "promotions"],
    4: ["spam"],
    5: ["not_found"] * 4,
    6: ["inbox"],
    7: ["error"],
}


@pytest.fixture(params=["results", "rollup"])
def counted_from(request) -> str:
    """Every query is checked twice: with each hour still dirty (counted from the
    results), and after the rollup was folded (counted from the rollup)."""
    return request.param


def _dataset(session, counted_from: str = "results"):
    ws_a = Workspace(name="A", slug="a")
    ws_b = Workspace(name="B", slug="b")
    session.add_all([ws_a, ws_b])
    session.flush()
    autumn = Campaign(workspace_id=ws_a.id, name="Autumn")
    winter = Campaign(workspace_id=ws_a.id, name="Winter")
    unused = Campaign(workspace_id=ws_a.id, name="Never sent")
    other = Campaign(workspace_id=ws_b.id, name="B's campaign")
    session.add_all([autumn, winter, unused, other])
    session.flush()
    seeds = []
    for i, esp in enumerate(["gmail"] * 4 + ["outlook"] * 2 + ["yahoo"] * 2):
        seeds.append(SeedAccount(workspace_id=ws_a.id, email=f"s{i}@{esp}.lab", esp=esp))
    seed_b = SeedAccount(workspace_id=ws_b.id, email="b@gmail.lab", esp="gmail")
    session.add_all([*seeds, seed_b])
    session.flush()

    def run(ws, campaign, key, status="completed"):
        r = PlacementRun(
            workspace_id=ws.id,
            campaign_id=campaign.id if campaign else None,
            idempotency_key=key,
            status=status,
            check_offsets_min=[1, 3, 5, 10],
        )
        session.add(r)
        session.flush()
        return r

    runs = [
        run(ws_a, autumn, "r0"),
        run(ws_a, autumn, "r1"),
        run(ws_a, winter, "r2", status="active"),
        run(ws_a, None, "r3"),
    ]
    run_b = run(ws_b, other, "rb")
    rows = [
        (0, 0, "inbox", RUN0_AT),
        (0, 1, "spam", RUN0_AT),
        (0, 4, "inbox", RUN0_AT),
        (0, 5, "inbox", RUN0_AT),
        (1, 0, "inbox", RUN1_AT),
        (1, 1, "inbox", RUN1_AT),
        (1, 2, "spam", RUN1_AT),
        (1, 3, "promotions", RUN1_AT),
        (1, 4, "spam", RUN1_AT),
        (1, 5, "missing", RUN1_AT),
        (1, 6, "inbox", RUN1_AT),
        (1, 7, "error", RUN1_AT),
        (2, 0, "inbox", RUN2_AT),
        (2, 4, "pending", RUN2_AT),
        (2, 6, "pending", RUN2_AT),
        (3, 0, "spam", RUN3_AT),
    ]
    for n, (run_i, seed_i, placement, sent_at) in enumerate(rows):
        result = PlacementResult(
            workspace_id=ws_a.id,
            run_id=runs[run_i].id,
            seed_id=seeds[seed_i].id,
            esp=seeds[seed_i].esp,
            token=f"t{n}",
            placement=placement,
            sent_at=sent_at,
            folder={"inbox": "INBOX", "spam": "Junk"}.get(placement),
            seconds_to_land=12.0 if placement in ("inbox", "spam", "promotions") else None,
            spf="pass" if placement != "pending" else None,
            decided_at=None if placement == "pending" else sent_at + timedelta(minutes=1),
        )
        session.add(result)
        session.flush()
        if run_i == 1:
            for attempt, outcome in enumerate(RUN1_CHECKS[seed_i], start=1):
                session.add(
                    PlacementCheck(
                        workspace_id=ws_a.id, result_id=result.id, attempt=attempt, outcome=outcome
                    )
                )
    session.add(
        PlacementResult(
            workspace_id=ws_b.id, run_id=run_b.id, seed_id=seed_b.id, esp="gmail", token="tb",
            placement="inbox", sent_at=RUN1_AT, decided_at=RUN1_AT,
        )
    )  # fmt: skip
    session.commit()
    if counted_from == "rollup":
        placement_rollup.fold(session=session)
        session.commit()
        assert session.exec(select(sa.func.count()).select_from(PlacementRollupDirty)).one() == 0
    return ws_a, ws_b, autumn, winter, runs


def test_summary_rates_and_change_against_the_previous_week(session, counted_from):
    ws_a, *_ = _dataset(session, counted_from)
    s = dash.period_summary(session=session, workspace_id=ws_a.id, period=WEEK)
    # This week: inbox 4, spam 2, promotions 1, missing 1 = 8 checked; 2 pending and
    # 1 error are not in the denominator; run 3 (at the period's end) is out.
    now = s.current
    assert (now.inbox, now.spam, now.promotions, now.missing) == (4, 2, 1, 1)
    assert (now.total_checked, now.pending, now.error) == (8, 2, 1)
    assert now.rate("inbox") == pytest.approx(0.5)
    assert now.rate("spam") == pytest.approx(0.25)
    assert now.rate("promotions") == pytest.approx(0.125)
    assert now.rate("missing") == pytest.approx(0.125)
    # Previous week: inbox 3, spam 1 = 4 checked.
    assert (s.previous.total_checked, s.previous.rate("inbox")) == (4, pytest.approx(0.75))
    assert s.change("inbox") == pytest.approx(-0.25)
    assert s.change("spam") == pytest.approx(0.0)
    assert s.change("promotions") == pytest.approx(0.125)
    assert s.change("missing") == pytest.approx(0.125)
    assert s.checked_change == 4


def test_esp_breakdown_counts_pending_beside_the_rates(session, counted_from):
    ws_a, *_ = _dataset(session, counted_from)
    by_esp = dash.esp_breakdown(session=session, workspace_id=ws_a.id, period=WEEK)
    assert sorted(by_esp) == ["gmail", "outlook", "yahoo"]
    gmail, outlook, yahoo = by_esp["gmail"], by_esp["outlook"], by_esp["yahoo"]
    # gmail: inbox 3 (s0, s1 in run 1; s0 in run 2), spam 1, promotions 1.
    assert (gmail.total_checked, gmail.rate("inbox")) == (5, pytest.approx(3 / 5))
    assert gmail.rate("promotions") == pytest.approx(1 / 5)
    # outlook: spam 1, missing 1, and s4 of run 2 still pending.
    assert (outlook.total_checked, outlook.pending) == (2, 1)
    assert outlook.rate("inbox") == 0.0 and outlook.rate("missing") == pytest.approx(0.5)
    # yahoo: inbox 1; the error and the pending seed are not checked.
    assert (yahoo.total_checked, yahoo.pending, yahoo.error) == (1, 1, 1)
    assert yahoo.rate("inbox") == 1.0


def test_campaign_filter(session, counted_from):
    ws_a, _ws_b, autumn, winter, _runs = _dataset(session, counted_from)
    s = dash.period_summary(
        session=session, workspace_id=ws_a.id, period=WEEK, campaign_id=autumn.id
    )
    assert s.current.total_checked == 7 and s.current.rate("inbox") == pytest.approx(3 / 7)
    assert s.previous.rate("inbox") == pytest.approx(0.75)
    assert s.change("inbox") == pytest.approx(3 / 7 - 0.75)
    w = dash.period_summary(
        session=session, workspace_id=ws_a.id, period=WEEK, campaign_id=winter.id
    )
    assert (w.current.total_checked, w.current.pending, w.current.rate("inbox")) == (1, 2, 1.0)
    assert w.previous.total_checked == 0 and w.change("inbox") is None
    assert sorted(w.by_esp) == ["gmail", "outlook", "yahoo"]
    assert w.by_esp["outlook"].rate("inbox") is None  # nothing checked there yet


def test_workspace_scoping(session, counted_from):
    ws_a, ws_b, autumn, _winter, _runs = _dataset(session, counted_from)
    b = dash.period_summary(session=session, workspace_id=ws_b.id, period=WEEK)
    assert (b.current.total_checked, b.current.inbox) == (1, 1)
    # Another workspace's campaign id filters to nothing.
    b_on_a = dash.period_summary(
        session=session, workspace_id=ws_b.id, period=WEEK, campaign_id=autumn.id
    )
    assert b_on_a.current.total_checked == 0 and b_on_a.current.rate("inbox") is None
    with pytest.raises(NotFoundError):
        dash.campaign_drilldown(session=session, workspace_id=ws_b.id, campaign_id=autumn.id)
    names = [n for _id, n in dash.campaigns_with_results(session=session, workspace_id=ws_a.id)]
    assert names == ["Autumn", "Winter"]  # "Never sent" has no run; B's is not A's
    assert (
        dash.esp_breakdown(
            session=session,
            workspace_id=ws_a.id,
            period=dash.Period(RUN3_AT, RUN3_AT + timedelta(1)),
        )["gmail"].spam
        == 1
    )


def test_daily_inbox_rate_series(session, counted_from):
    ws_a, *_ = _dataset(session, counted_from)
    series = dash.inbox_rate_series(session=session, workspace_id=ws_a.id, period=WEEK)
    assert series.bucket == "day"
    assert series.buckets == [WEEK.start + timedelta(days=d) for d in range(7)]
    #                       8     9    10    11   12    13    14 November
    assert series.inbox_rates("gmail") == [None, 0.5, None, 1.0, None, None, None]
    assert series.inbox_rates("outlook") == [None, 0.0, None, None, None, None, None]
    assert series.inbox_rates("yahoo") == [None, 1.0, None, None, None, None, None]
    assert series.counts["outlook"][datetime(2026, 11, 11, tzinfo=UTC)].pending == 1


def test_hourly_series_for_short_ranges(session, counted_from):
    ws_a, *_ = _dataset(session, counted_from)
    day = dash.Period(datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC))
    series = dash.inbox_rate_series(session=session, workspace_id=ws_a.id, period=day)
    assert series.bucket == "hour" and len(series.buckets) == 24
    rates = series.inbox_rates("gmail")
    assert rates[10] == pytest.approx(0.5)
    assert [r for i, r in enumerate(rates) if i != 10] == [None] * 23


def test_campaign_drilldown_and_evolution_over_checks(session, counted_from):
    ws_a, _ws_b, autumn, _winter, runs = _dataset(session, counted_from)
    d = dash.campaign_drilldown(session=session, workspace_id=ws_a.id, campaign_id=autumn.id)
    assert [r[0] for r in d.runs] == [runs[1].id, runs[0].id]
    assert d.run_id == runs[1].id  # the newest run by default
    assert [s.seed_email for s in d.seeds][:2] == ["s0@gmail.lab", "s1@gmail.lab"]
    s1 = d.seeds[1]
    assert (s1.placement, s1.folder, s1.seconds_to_land, s1.spf) == ("inbox", "INBOX", 12.0, "pass")
    assert s1.checks == {1: "not_found", 2: "inbox"}
    assert d.counts.total_checked == 7 and d.counts.error == 1

    def standing(step):
        c = step.counts
        return (c.inbox, c.spam, c.promotions, c.missing, c.pending, c.error)

    assert [(s.attempt, s.offset_min) for s in d.steps] == [(1, 1), (2, 3), (3, 5), (4, 10)]
    assert [standing(s) for s in d.steps] == [
        (2, 2, 0, 0, 3, 1),  # +1 min: s0, s6 inbox; s2, s4 spam; s7 error
        (3, 2, 0, 0, 2, 1),  # +3: s1 found in the inbox
        (3, 2, 1, 0, 1, 1),  # +5: s3 found in promotions
        (3, 2, 1, 1, 0, 1),  # +10: s5 never found: missing
    ]
    older = dash.campaign_drilldown(
        session=session, workspace_id=ws_a.id, campaign_id=autumn.id, run_id=runs[0].id
    )
    assert older.run_id == runs[0].id and len(older.seeds) == 4
    # A run of another campaign is not shown under this one: the newest is used.
    other = dash.campaign_drilldown(
        session=session, workspace_id=ws_a.id, campaign_id=autumn.id, run_id=runs[2].id
    )
    assert other.run_id == runs[1].id


def test_latest_change_moves_on_new_and_decided_results(session, counted_from):
    ws_a, ws_b, _autumn, winter, runs = _dataset(session, counted_from)
    first = dash.latest_change(session=session, workspace_id=ws_a.id)
    assert first == dash.latest_change(session=session, workspace_id=ws_a.id)
    b_before = dash.latest_change(session=session, workspace_id=ws_b.id)

    pending = session.get(PlacementResult, _result_id(session, runs[2].id, "outlook"))
    pending.placement, pending.decided_at = "spam", RUN3_AT + timedelta(hours=1)  # now
    session.commit()
    second = dash.latest_change(session=session, workspace_id=ws_a.id)
    assert second != first

    seed = session.exec(select(SeedAccount).where(SeedAccount.email == "s1@gmail.lab")).one()
    session.add(
        PlacementResult(
            workspace_id=ws_a.id, run_id=runs[2].id, seed_id=seed.id, esp="gmail",
            token="new", sent_at=RUN2_AT,
        )
    )  # fmt: skip
    session.commit()
    assert dash.latest_change(session=session, workspace_id=ws_a.id) != second
    assert dash.latest_change(session=session, workspace_id=ws_b.id) == b_before
    s = dash.period_summary(
        session=session, workspace_id=ws_a.id, period=WEEK, campaign_id=winter.id
    )
    assert (s.current.total_checked, s.current.spam, s.current.pending) == (2, 1, 2)


def _result_id(session, run_id: int, esp: str) -> int:
    return session.exec(
        select(PlacementResult.id).where(
            PlacementResult.run_id == run_id, PlacementResult.esp == esp
        )
    ).one()


def test_previous_period_is_the_same_length_just_before():
    day = dash.Period(datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC))
    assert day.previous == dash.Period(datetime(2026, 11, 8, tzinfo=UTC), day.start)
    assert dash.bucket_for(day) == "hour" and dash.bucket_for(WEEK) == "day"


def test_page_snapshot_shows_the_service_numbers(session, counted_from):
    """The page's view of the week: cards, figures and the drill-down rows."""
    from mailer_app.state.dashboard import snapshot

    ws_a, _ws_b, autumn, _winter, runs = _dataset(session, counted_from)
    data = snapshot(ws_a.id, "2026-11-08", "2026-11-14", "all", "")
    cards = {c["key"]: c for c in data["cards"]}
    assert cards["inbox"]["value"] == "50.0%"
    assert cards["inbox"]["change"] == "-25.0 points against the period before"
    assert cards["inbox"]["colour"] == "red" and cards["missing"]["colour"] == "red"
    assert (cards["checked"]["value"], cards["checked"]["change"]) == (
        "8",
        "+4 against the period before",
    )
    assert (data["pending"], data["errors"], data["has_results"]) == (2, 1, True)
    bars = {bar.name: list(bar.y) for bar in data["esp_fig"].data}
    assert list(data["esp_fig"].data[0].x) == ["gmail", "outlook", "yahoo"]
    assert bars["inbox"] == [3, 0, 1] and bars["pending"] == [0, 1, 1]
    lines = {line.name: list(line.y) for line in data["series_fig"].data}
    assert lines["gmail"] == [None, 50.0, None, 100.0, None, None, None]
    assert data["drill"] is None

    data = snapshot(ws_a.id, "2026-11-08", "2026-11-14", str(autumn.id), "")
    drill = data["drill"]
    assert drill["run_id"] == str(runs[1].id)
    s1 = next(r for r in drill["rows"] if r["email"] == "s1@gmail.lab")
    assert (s1["landed"], s1["auth"], s1["checks"]) == (
        "12 s",
        "pass / – / –",
        "1: not found, 2: inbox",
    )
    assert drill["steps"][0]["label"] == "1 (+1 min)" and drill["steps"][3]["missing"] == "1"

    empty = snapshot(ws_a.id, "2025-01-01", "2025-01-02", "all", "")
    assert empty["has_results"] is False and empty["bucket"] == "hour"
    with pytest.raises(Exception, match="start date"):
        snapshot(ws_a.id, "2026-11-14", "2026-11-08", "all", "")
