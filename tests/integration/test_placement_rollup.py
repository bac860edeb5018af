"""The hourly placement rollup gives the same counts as the results, whatever changed
and whether or not it was folded (SQLite and PostgreSQL; the triggers are real).

Each check compares `placement_rollup.count_placements` with an independent count
written here in plain SQL over `placement_result`.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailer_app.models import (
    Campaign,
    Placement,
    PlacementResult,
    PlacementRollup,
    PlacementRollupDirty,
    PlacementRun,
    SeedAccount,
    Workspace,
)
from mailer_app.services import placement, placement_rollup
from mailer_app.services.placement_results import summarize_placement

T0 = datetime(2026, 11, 2, tzinfo=UTC)
ESPS = ("gmail", "outlook", "yahoo")
PLACEMENTS = [p.value for p in Placement]


def _world(session, *, seeds=12, runs=6):
    """Two workspaces, two campaigns and pre-flight runs, results with no send time."""
    ws, other = Workspace(name="A", slug="a"), Workspace(name="B", slug="b")
    session.add_all([ws, other])
    session.flush()
    camps = [Campaign(workspace_id=ws.id, name=n) for n in ("Autumn", "Winter")]
    session.add_all(camps)
    session.flush()
    seed_rows = [
        SeedAccount(workspace_id=w.id, email=f"s{i}@{ESPS[i % 3]}.lab", esp=ESPS[i % 3])
        for w in (ws, other)
        for i in range(seeds)
    ]
    session.add_all(seed_rows)
    session.flush()
    run_rows = []
    for r in range(runs):
        owner = other if r == runs - 1 else ws
        campaign = camps[r % 2].id if r % 3 != 2 and owner is ws else None
        run_rows.append(
            PlacementRun(workspace_id=owner.id, campaign_id=campaign, idempotency_key=f"r{r}")
        )
    session.add_all(run_rows)
    session.flush()
    n = 0
    for run in run_rows:
        for seed in (s for s in seed_rows if s.workspace_id == run.workspace_id):
            session.add(
                PlacementResult(
                    workspace_id=run.workspace_id,
                    run_id=run.id,
                    seed_id=seed.id,
                    esp=seed.esp,
                    token=f"t{n}",
                )
            )
            n += 1
    session.commit()
    return ws, other, camps


def _expected(session, workspace_id, start, end, campaign_id=None) -> Counter:
    sql = (
        "SELECT r.esp, r.placement, count(*) FROM placement_result r "
        "JOIN placement_run run ON run.id = r.run_id "
        "WHERE r.workspace_id = :ws AND r.sent_at >= :start AND r.sent_at < :end "
    )
    params = {"ws": workspace_id, "start": start, "end": end}
    if campaign_id is not None:
        sql += "AND run.campaign_id = :c "
        params["c"] = campaign_id
    rows = session.execute(
        sa.text(sql + "GROUP BY r.esp, r.placement").bindparams(
            sa.bindparam("start", type_=PlacementResult.__table__.c.sent_at.type),
            sa.bindparam("end", type_=PlacementResult.__table__.c.sent_at.type),
        ),
        params,
    )
    return Counter({(esp, p): n for esp, p, n in rows})


def _counted(session, workspace_id, start, end, campaign_id=None) -> Counter:
    found: Counter = Counter()
    for _, esp, p, n in placement_rollup.count_placements(
        session=session,
        workspace_id=workspace_id,
        sent_from=start,
        sent_to=end,
        campaign_id=campaign_id,
    ):
        found[(esp, p)] += n
    return +found


def _dirty(session) -> int:
    return session.exec(select(sa.func.count()).select_from(PlacementRollupDirty)).one()


def _periods(rng):
    """Whole hours, partial hours at both edges, one hour, less than an hour."""
    yield T0, T0 + timedelta(days=3)
    yield T0 - timedelta(days=1), T0 + timedelta(days=30)
    yield T0 + timedelta(hours=5), T0 + timedelta(hours=6)
    yield T0 + timedelta(minutes=17), T0 + timedelta(minutes=43)
    for _ in range(8):
        start = T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        yield start, start + timedelta(minutes=rng.randrange(1, 2 * 24 * 60))


def _assert_all_agree(session, ws, camps, rng):
    for start, end in _periods(rng):
        for campaign_id in (None, camps[0].id, camps[1].id):
            assert _counted(session, ws.id, start, end, campaign_id) == _expected(
                session, ws.id, start, end, campaign_id
            ), (start, end, campaign_id)


def test_random_changes_agree_before_and_after_each_fold(session):
    rng = random.Random(20261123)
    ws, _other, camps = _world(session)
    results = list(session.exec(select(PlacementResult)))
    for round_ in range(6):
        # Send some copies, decide some, move a few in time (a copy sent again).
        for result in rng.sample(results, k=len(results) // 3):
            choice = rng.random()
            if result.sent_at is None or choice < 0.2:
                result.sent_at = T0 + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
            elif result.placement == Placement.PENDING or choice < 0.3:
                result.placement = rng.choice(PLACEMENTS)
            else:
                result.sent_at = None
            session.add(result)
        session.commit()
        assert _dirty(session) > 0
        _assert_all_agree(session, ws, camps, rng)  # the changed hours are read from results
        if round_ % 2:
            placement_rollup.fold(session=session)
            session.commit()
            assert _dirty(session) == 0
            _assert_all_agree(session, ws, camps, rng)
    assert session.exec(select(sa.func.count()).select_from(PlacementRollup)).one() > 0


def test_the_writers_of_results_mark_their_hours(session):
    """The services that write results (a copy sent, a result decided, a run ended)
    leave their hours dirty, so a folded rollup is never trusted past them."""
    ws, _other, camps = _world(session, runs=2)
    run = session.exec(select(PlacementRun).where(PlacementRun.workspace_id == ws.id)).first()
    tokens = list(
        session.exec(select(PlacementResult.token).where(PlacementResult.run_id == run.id))
    )
    sent_at = T0 + timedelta(hours=3, minutes=5)
    week = (T0, T0 + timedelta(days=7))
    placement.seed_copies_sent(
        session=session, run_id=run.id, sent=[(t, f"<{t}@x>", sent_at) for t in tokens]
    )
    session.commit()
    assert _counted(session, ws.id, *week)[("gmail", "pending")] == 4
    placement_rollup.fold(session=session)
    session.commit()
    first = session.exec(select(PlacementResult).where(PlacementResult.run_id == run.id)).first()
    assert placement._decide(session, first.id, Placement.SPAM)
    session.commit()
    assert _dirty(session) == 1
    assert _counted(session, ws.id, *week)[(first.esp, "spam")] == 1
    placement._end_pending(session, run.id, "the run was cancelled")
    session.commit()
    assert _counted(session, ws.id, *week) == Counter(
        {
            ("gmail", "spam"): 1,
            ("gmail", "error"): 3,
            ("outlook", "error"): 4,
            ("yahoo", "error"): 4,
        }
    )
    placement_rollup.fold(session=session)
    session.commit()
    assert _counted(session, ws.id, *week) == _expected(session, ws.id, *week)
    session.execute(sa.delete(PlacementResult).where(PlacementResult.id == first.id))
    session.commit()
    assert _counted(session, ws.id, *week)[("gmail", "spam")] == 0


def test_many_dirty_hours_are_counted_from_the_results(session):
    ws, _other, camps = _world(session, seeds=60, runs=2)
    results = list(
        session.exec(select(PlacementResult).where(PlacementResult.workspace_id == ws.id))
    )
    for i, result in enumerate(results):  # one hour each: more than MAX_DIRTY_HOURS
        result.sent_at = T0 + timedelta(hours=i, minutes=7)
        session.add(result)
    session.commit()
    hours = {r.sent_at.replace(minute=0) for r in results}
    assert len(hours) > placement_rollup.MAX_DIRTY_HOURS
    span = (T0, T0 + timedelta(days=10))
    assert _counted(session, ws.id, *span) == _expected(session, ws.id, *span)
    assert sum(_counted(session, ws.id, *span).values()) == len(results)


def test_a_fold_drops_only_the_marks_it_read(session):
    ws, _other, _camps = _world(session, runs=2)
    for i, result in enumerate(session.exec(select(PlacementResult)).all()):
        result.sent_at = T0 + timedelta(hours=i % 5)
        session.add(result)
    session.commit()
    marks = _dirty(session)
    assert placement_rollup.fold(session=session, limit=3) == 3
    session.commit()
    assert _dirty(session) == marks - 3
    span = (T0, T0 + timedelta(days=1))
    assert _counted(session, ws.id, *span) == _expected(session, ws.id, *span)
    assert placement_rollup.fold(session=session) == marks - 3
    session.commit()
    assert _dirty(session) == 0
    assert _counted(session, ws.id, *span) == _expected(session, ws.id, *span)


def test_dashboard_period_summary_reads_the_rollup(session):
    """After a fold, whole hours come from the rollup: changing a rollup row by hand
    shows in the summary (proof the results were not scanned), and a result changed
    since shows too (its hour is dirty, read from the results)."""
    ws, _other, _camps = _world(session, runs=2)
    for result in session.exec(select(PlacementResult)).all():
        result.sent_at, result.placement = T0 + timedelta(minutes=30), Placement.INBOX
        session.add(result)
    session.commit()
    placement_rollup.fold(session=session)
    session.commit()
    day = {"sent_from": T0, "sent_to": T0 + timedelta(days=1)}
    assert summarize_placement(session=session, workspace_id=ws.id, **day).overall.inbox == 12
    session.execute(
        sa.update(PlacementRollup)
        .where(PlacementRollup.workspace_id == ws.id, PlacementRollup.esp == "gmail")
        .values(count=PlacementRollup.count + 100)
    )
    session.commit()
    assert summarize_placement(session=session, workspace_id=ws.id, **day).overall.inbox == 112
    one = session.exec(select(PlacementResult).where(PlacementResult.workspace_id == ws.id)).first()
    one.placement = Placement.SPAM
    session.add(one)
    session.commit()
    now = summarize_placement(session=session, workspace_id=ws.id, **day).overall
    assert (now.inbox, now.spam) == (11, 1)  # the dirty hour is counted from the results


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_migration_counts_results_that_were_already_there(dialect, tmp_path, request):
    """Results written before migration 0008 (no triggers yet) are in the rollup."""
    from alembic import command
    from sqlmodel import Session

    from mailer_app.db import alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}" if dialect == "sqlite" else _scratch_postgres(request)
    command.upgrade(alembic_config(url), "0007")
    engine = make_engine(url)
    with Session(engine) as s:
        ws, _other, _camps = _world(s, seeds=3, runs=2)
        results = s.exec(
            select(PlacementResult)
            .where(PlacementResult.workspace_id == ws.id)
            .order_by(PlacementResult.id)
        )
        for result, (minute, where) in zip(
            results, [(0, "inbox"), (10, "inbox"), (90, "spam")], strict=True
        ):
            result.sent_at, result.placement = T0 + timedelta(minutes=minute), where
            s.add(result)
        s.commit()
        ws_id = ws.id
    command.upgrade(alembic_config(url), "head")
    with Session(engine) as s:
        rows = s.exec(
            select(PlacementRollup.hour, PlacementRollup.placement, PlacementRollup.count)
        ).all()
        per_hour = Counter()
        for hour, where, n in rows:
            per_hour[(hour.hour, where)] += n
        assert per_hour == Counter({(0, "inbox"): 2, (1, "spam"): 1})
        assert _dirty(s) == 0
        day = (T0, T0 + timedelta(days=1))
        assert _counted(s, ws_id, *day) == Counter(
            {("gmail", "inbox"): 1, ("outlook", "inbox"): 1, ("yahoo", "spam"): 1}
        )
    engine.dispose()


def _scratch_postgres(request) -> str:
    """An empty database of its own on the test PostgreSQL server (dropped after)."""
    import secrets

    import psycopg

    base = request.getfixturevalue("postgres_url").rsplit("/", 1)[0]
    name = f"mailer_test_migration_{secrets.token_hex(3)}"
    admin = base.replace("postgresql+psycopg://", "postgresql://", 1) + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return f"{base}/{name}"


def test_the_maintenance_tick_folds_what_changed(session, engine, redis_url):
    from jobs.maintenance import tick

    ws, _other, _camps = _world(session, runs=2)
    for result in session.exec(select(PlacementResult)).all():
        result.sent_at = T0 + timedelta(minutes=5)
        session.add(result)
    session.commit()
    marks = _dirty(session)
    assert marks == 24
    assert tick()["rollup_marks_folded"] == marks
    session.expire_all()
    assert _dirty(session) == 0
    rolled = session.exec(
        select(sa.func.sum(PlacementRollup.count)).where(PlacementRollup.workspace_id == ws.id)
    ).one()
    assert rolled == 12
    assert tick()["rollup_marks_folded"] == 0
